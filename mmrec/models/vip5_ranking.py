"""VIP5's prompts, visual tokens and adapters on an encoder-only backbone, scoring the whole catalogue.

Goes beyond VIP5: instead of generating an identifier (which can only rank the beams it decodes), the
prompt is *encoded* by a frozen BERT-like backbone with adapters (the bundled all-MiniLM-L6-v2 by
default) and compared with a vector of **every** item:

- item ``u_i = W_o (W_f f_i + e_i)``, ``v_i = u_i / |u_i|``: ``f_i`` the item's feature stores
  (standardised: centred on the catalogue mean, rows scaled to unit mean norm), ``e_i`` a learned ID
  embedding (``head.id_embedding``);
- query ``q = W_q pool(encoder(prompt)) + mean_{j in history} v_j + p_user``: the prompt (a sequential
  template with the user's identifier and recent items, each item written as its identifier followed by
  ``k`` projected visual tokens, plus whole-word embeddings) encoded by the adapted backbone and pooled
  over the history items' positions (``head.pooling: items``); the mean vector of the history items the
  prompt shows (``head.history_residual``); a learned user embedding (``head.user_embedding``). ``W_q``
  starts at zero, so training starts from the history and user terms and the prompt adds what it can;
- score ``s_ui = q . v_i / (|q| temperature) + b_i`` with ``b_i`` a learned item bias initialised at the
  log training popularity (``head.popularity_prior``). :meth:`item_vectors` / :meth:`query_vectors`
  carry ``b_i`` as one extra dimension, so scores stay one matrix product (full ranking, ``predict`` and
  faiss retrieval all work unchanged).

Training: full-softmax cross-entropy of the next item over the catalogue, plus (``head.future_weight``)
of the training items that follow it (the batches' ``future_items``: a dense "all-action" objective that
gives each costly backbone pass several targets), with the prompt's history items left out of the
softmax as they are at evaluation (``head.mask_history_in_training``).

Why this shape (issue 10, the collapse of the first version): with one shared projector for the prompt
tokens and the item side, raw (uncentred) features and a query pooled over every prompt token, the item
vectors converged within ten steps to one direction (mean pairwise cosine 0.997) and every query to one
vector (cosine >= 0.997 with the mean): cross-entropy from a random start is cheapest at the uniform
solution, which the shared, RMS-normalised projector output (norm ~ sqrt(d), varying 6% across items)
reaches by moving a bias. The model then ranked every user by a popularity proxy, below MostPop.

Trained: adapters (or LoRA), the visual projector, the backbone's layer norms, whole-word embeddings, the
query / item projections, the ID and user embeddings and the item bias. Test metrics are reported for
seen and unseen templates (``test/sequential/{seen,unseen}/...``; ``test/<metric>`` = seen).

Example:
    >>> model = VIP5Ranking(catalog=dm.catalog, adapter=AdapterConfig(name="lora/peft"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmrec.config_groups import as_config, plain_hparams
from mmrec.metrics import FullRankingEvaluator, item_groups
from mmrec.models.base import LIST_K, RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.models.vip5_common import (
    PromptFeatures,
    TrainedWeightsCheckpoint,
    choose_features,
    insert_vip5_adapters,
    load_checked_backbone,
    standardized,
    trainable_summary,
)
from mmrec.models.vip5_config import (
    AdapterConfig,
    BackboneConfig,
    OptimConfig,
    PromptFeatureConfig,
    RankingEvalConfig,
    RankingHeadConfig,
)

if TYPE_CHECKING:  # transformers is imported when the backbone is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# defaults (frozen dataclasses: one shared instance each is safe)
_BACKBONE = BackboneConfig(name="minilm")
_ADAPTER = AdapterConfig()
_FEATURES = PromptFeatureConfig()
_HEAD = RankingHeadConfig()
_OPTIM = OptimConfig(lr=2e-3)
_METRICS = RankingEvalConfig()


@MODELS.register("vip5/ranking")
class VIP5Ranking(TrainedWeightsCheckpoint, RecommenderModule):
    """Full-catalogue ranking head on an encoder-only backbone (registered as ``vip5/ranking``).

    Args:
        catalog: from ``VIP5DataModule.catalog`` (linked by the CLI); the datamodule must build next-item
            sequential prompts only (``tasks: [sequential]``, ``prompts.sequential_yes_no: false``).
        backbone: the frozen BERT-like backbone (default: the bundled MiniLM).
        adapter: the adapter method by registry key (default Houlsby bottlenecks, reduction 8).
        features: the stores feeding the prompt's visual tokens.
        head: the query and item towers (see the module docstring).
        optim: AdamW settings.
        metrics: cut-offs and ``predict`` size.
    """

    backbone: PreTrainedModel
    item_table: torch.Tensor  # buffer (register_buffer in __init__): (N+1, D) concatenated item features

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        backbone: BackboneConfig = _BACKBONE,
        adapter: AdapterConfig = _ADAPTER,
        features: PromptFeatureConfig = _FEATURES,
        head: RankingHeadConfig = _HEAD,
        optim: OptimConfig = _OPTIM,
        metrics: RankingEvalConfig = _METRICS,
    ) -> None:
        backbone = as_config(BackboneConfig, backbone, "backbone")
        adapter = as_config(AdapterConfig, adapter, "adapter")
        features = as_config(PromptFeatureConfig, features, "features")
        head = as_config(RankingHeadConfig, head, "head")
        optim = as_config(OptimConfig, optim, "optim")
        metrics = as_config(RankingEvalConfig, metrics, "metrics")
        super().__init__(
            catalog=catalog,
            lr=optim.lr,
            weight_decay=optim.weight_decay,
            eval_ks=metrics.eval_ks,
            predict_k=metrics.predict_k,
        )
        self.save_hyperparameters()
        plain_hparams(self)  # dataclass groups -> dicts (checkpoints load with weights_only=True)
        self.head_config, self.optim_config = head, optim
        if list(self.catalog.get("tasks", ["sequential"])) != ["sequential"]:
            raise ValueError(
                "the ranking head trains on the sequential task only: set data.init_args.tasks: [sequential] "
                f"(got {self.catalog.get('tasks')})."
            )
        if "yes_no" in set((self.catalog.get("template_kinds") or {}).get("sequential", [])):
            raise ValueError(
                "the ranking head scores next-item prompts; the datamodule also builds yes/no sequential "
                "prompts (A-7, A-8): set data.init_args.prompts.sequential_yes_no: false."
            )
        if adapter.per_task:
            raise ValueError("the ranking head has one task; set adapter.per_task: false.")
        self.backbone, self.tokenizer, self.backbone_identity = load_checked_backbone(
            self.catalog, backbone, "encoder"
        )
        h = int(self.backbone.config.hidden_size)
        fdims = {k: int(v) for k, v in dict(self.catalog.get("feature_dims") or {}).items()}
        self.feature_names = choose_features(self.catalog, features.stores)
        self.prompt = PromptFeatures(
            h,
            {n: fdims[n] for n in self.feature_names},
            int(self.catalog.get("visual_tokens", 0)),
            int(self.catalog.get("max_whole_words", 512)) if features.whole_word_embeddings else 0,
            features.projector_hidden,
            standardize=features.standardize,
        )
        self.item_stores = list(head.item_stores) if head.item_stores is not None else sorted(fdims)
        unknown = [s for s in self.item_stores if s not in fdims]
        if unknown:
            raise ValueError(
                f"head.item_stores {unknown} are not datamodule stores ({sorted(fdims) or 'none'}); add them "
                "to data.init_args.stores or fix head.item_stores."
            )
        if not self.item_stores and not head.id_embedding:
            raise ValueError(
                "items would have no representation: give a feature store (head.item_stores) or set "
                "head.id_embedding: true."
            )
        out = int(head.dim or h)
        item_in = sum(fdims[s] for s in self.item_stores)
        self.item_features = nn.Linear(item_in, h) if item_in else None
        self.register_buffer("item_table", torch.zeros(1, max(item_in, 1)), persistent=False)
        self._items_attached = not self.item_stores
        self.id_embedding = nn.Embedding(self.num_items + 1, h, padding_idx=0) if head.id_embedding else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        self.item_head = nn.Linear(h, out)
        self.query_head = nn.Linear(h, out)
        nn.init.zeros_(self.query_head.weight)  # the prompt's term starts silent (see the module docstring)
        nn.init.zeros_(self.query_head.bias)
        self.user_embedding = nn.Embedding(self.num_users, out) if head.user_embedding else None
        if self.user_embedding is not None:
            nn.init.zeros_(self.user_embedding.weight)
        self.item_bias = nn.Parameter(torch.zeros(self.num_items + 1)) if head.popularity_prior else None
        self.adapter_handle, self.adapters = insert_vip5_adapters(
            self.backbone, adapter, train_layer_norms=backbone.train_layer_norms
        )
        self.temperature = float(head.temperature)
        self.unseen_evaluators = nn.ModuleDict(
            {
                stage: FullRankingEvaluator(ks=self.eval_ks, ignore_columns=(0,), list_k=LIST_K)
                for stage in ("val", "test")
            }
        )
        log.info("VIP5Ranking %s", trainable_summary(self))

    # ------------------------------------------------------------------ data
    def setup(self, stage: str) -> None:
        """Attach frozen feature tables from the trainer's datamodule (not stored in checkpoints) and the
        training popularity behind the head / tail / cold metrics."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "model_inputs"):
            raise RuntimeError(
                "VIP5Ranking needs the VIP5DataModule (mmrec.datamodules.vip5.VIP5DataModule)."
            )
        inputs = dm.model_inputs()
        if not (self.prompt.attached and self._items_attached):
            self.attach_data(inputs)
        self.set_item_popularity(inputs["item_popularity"])

    def set_item_popularity(self, popularity: Any) -> None:
        """As :meth:`RecommenderModule.set_item_popularity`, for the unseen-template evaluators too."""
        super().set_item_popularity(popularity)
        pop = torch.as_tensor(np.asarray(popularity, dtype=np.float64)).flatten()
        groups = item_groups(pop, self.head_fraction, self.cold_max_count, ignore_columns=(0,))
        for stage in self.unseen_evaluators:
            self._unseen_evaluator(stage).set_item_groups(groups)

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Attach ``datamodule.model_inputs()``: feature tables and (on a fresh model) training popularity.

        The popularity prior is initialised only while the model is untrained (``global_step == 0`` and
        the bias still zero), so a restored checkpoint keeps its learned bias.
        """
        tables = inputs["features"]
        if self.feature_names:
            self.prompt.attach(tables)
        if self.item_stores:
            parts = [standardized(*tables[s]) for s in self.item_stores]
            self.item_table = torch.cat(parts, dim=1).to(self.item_table.device)
            self._items_attached = True
        if self.item_bias is not None and not bool(self.item_bias.detach().any()):
            counts = torch.as_tensor(inputs["item_popularity"], dtype=torch.float32)
            if counts.shape != self.item_bias.shape:
                raise ValueError(
                    f"item_popularity has shape {tuple(counts.shape)}, expected ({self.num_items + 1},)."
                )
            prior = torch.log1p(counts)
            with torch.no_grad():
                self.item_bias.copy_((prior - prior[1:].mean()).to(self.item_bias.device))
                self.item_bias[0] = 0.0
        self._reset_cache()

    # ------------------------------------------------------------------ vectors
    def item_raw(self) -> torch.Tensor:
        """``(N+1, dim)`` unnormalised item vectors ``u_i`` (row 0 zeros)."""
        dev = self.item_head.weight.device
        rep = torch.zeros(self.num_items + 1, self.item_head.in_features, device=dev)
        if self.item_features is not None:
            if not self._items_attached:
                raise RuntimeError(
                    "item features are not attached: call model.attach_data(dm.model_inputs())."
                )
            rep = rep + self.item_features(self.item_table)
        if self.id_embedding is not None:
            rep = rep + self.id_embedding.weight
        u = self.item_head(rep)
        return torch.cat([torch.zeros_like(u[:1]), u[1:]])

    def _with_bias(self, vecs: torch.Tensor) -> torch.Tensor:
        if self.item_bias is None:
            return vecs
        return torch.cat([vecs, self.item_bias.unsqueeze(1)], dim=1)

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, dim [+1])`` item vectors: ``v_i`` (unit norm) and, with the popularity prior, ``b_i``
        as the last column (row 0 zeros)."""
        return self._with_bias(F.normalize(self.item_raw(), dim=-1))

    def encode_prompts(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled backbone encodings ``(B, h)`` of the prompts."""
        tok = self.backbone.get_input_embeddings()(batch["input_ids"])
        emb = self.prompt(tok, batch["whole_word_ids"], batch["feature_items"], batch["feature_slots"])
        mask = batch["attention_mask"]
        hidden = self.backbone(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        pooling = self.head_config.pooling
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "items":  # the history items' identifier + visual-token positions
            items = batch.get("mention_items")
            items = (items if items is not None else batch["feature_items"]) > 0
            items = items & mask.bool()
            mask = torch.where(items.any(dim=1, keepdim=True), items, mask.bool())
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def query_raw(
        self, batch: Mapping[str, torch.Tensor], item_raw: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, dim)`` unnormalised queries: prompt term + history mean + user term."""
        q = self.query_head(self.encode_prompts(batch))
        if self.head_config.history_residual:
            hist = batch["history_items"]
            u = item_raw if item_raw is not None else self.item_raw()
            v = F.normalize(u[hist], dim=-1)  # padding rows of u are zero
            n = (hist > 0).sum(dim=1, keepdim=True).clamp(min=1).to(v.dtype)
            q = q + v.sum(dim=1) / n
        if self.user_embedding is not None:
            users = batch["user"]
            known = (users >= 0).unsqueeze(-1)  # user -1: a new user given by items, no learned vector
            q = q + self.user_embedding(users.clamp(min=0)) * known
        return q

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, dim [+1])`` queries ``q / (|q| temperature)`` (and a column of ones for the item bias)."""
        q = F.normalize(self.query_raw(batch), dim=-1) / self.temperature
        if self.item_bias is None:
            return q
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1)

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the next item (plus the following training items) over the catalogue."""
        u = self.item_raw()
        q = F.normalize(self.query_raw(batch, u), dim=-1) / self.temperature
        logits = q @ F.normalize(u, dim=-1).T
        if self.item_bias is not None:
            logits = logits + self.item_bias
        logits[:, 0] = float("-inf")
        target = batch["target_item"]
        future = batch.get("future_items")
        if self.head_config.mask_history_in_training and "history_items" in batch:
            hist = batch["history_items"]
            keep = hist == target.unsqueeze(1)  # a repeated target stays rankable
            if future is not None:
                keep = keep | (hist.unsqueeze(2) == future.unsqueeze(1)).any(dim=2)
            logits = logits.scatter(1, torch.where(keep, 0, hist), float("-inf"))
        logp = logits.log_softmax(dim=-1)
        loss = -logp.gather(1, target.unsqueeze(1)).mean()
        w = self.head_config.future_weight
        if w > 0 and future is not None and future.numel():
            valid = future > 0
            if bool(valid.any()):
                lf = -logp.gather(1, future).masked_fill(~valid, 0.0)
                loss = loss + w * lf.sum() / valid.sum()
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.optim_config.lr, weight_decay=self.optim_config.weight_decay)
        warm = int(self.optim_config.warmup_steps)
        if warm <= 0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation (seen / unseen)
    def _unseen_evaluator(self, stage: str) -> FullRankingEvaluator:
        """The evaluator of the unseen-template prompts of ``stage`` (``val`` / ``test``)."""
        ev = self.unseen_evaluators[stage]
        assert isinstance(ev, FullRankingEvaluator)  # the ModuleDict holds only those (__init__)
        return ev

    def _split_evaluator(self, stage: str, batch: Mapping[str, Any]) -> FullRankingEvaluator:
        if batch.get("split", "seen") == "unseen":
            return self._unseen_evaluator(stage)
        return self.val_evaluator if stage == "val" else self.test_evaluator

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split_evaluator("val", batch))

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split_evaluator("test", batch))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._unseen_evaluator("val").reset()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._unseen_evaluator("test").reset()

    def _log_split(self, stage: str) -> dict[str, float]:
        out: dict[str, float] = {}
        seen_ev = self.val_evaluator if stage == "val" else self.test_evaluator
        for split, ev in (("seen", seen_ev), ("unseen", self._unseen_evaluator(stage))):
            if int(ev.num_users) == 0:
                continue
            for name, v in ev.compute().items():
                out[f"{stage}/sequential/{split}/{name}"] = float(v)
                if split == "seen":
                    out[f"{stage}/{name}"] = float(v)
        for name, v in out.items():
            self.log(name, v, prog_bar=name in (f"{stage}/ndcg@10", f"{stage}/hr@10"), sync_dist=False)
        self._reset_cache()
        return out

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self.test_per_user = self.test_evaluator.per_user()
        values = self._log_split("test")
        self._write_metrics_file("test", values)


__all__ = ["VIP5Ranking"]
