"""VIP5's prompts, visual tokens and adapters on an encoder-only backbone, scoring the whole catalogue.

Goes beyond VIP5: instead of generating an identifier (which can only rank the beams it decodes), the
prompt is *encoded* by a frozen BERT-like backbone with adapters (the bundled all-MiniLM-L6-v2 by
default, ``backbone: minilm``) and the pooled encoding is compared by dot product with a representation
of **every** item built from the same features:

- query ``q = normalize(W_q pool(encoder(prompt)))``: the sequential prompt with the user's recent items,
  each written as its identifier followed by its ``k`` projected visual tokens, plus whole-word
  embeddings (as in :class:`~mmrec.models.vip5.VIP5`);
- item ``v_i = normalize(W_i (mean_k visual_tokens(i) + W_t text_i [+ e_i]))``: the same visual
  projector's tokens pooled, the item's text feature (``item_text_feature`` store) projected, and
  optionally a learned ID embedding;
- score ``q . v_i / temperature``; training is full-softmax cross-entropy over the catalogue, evaluation
  exact full ranking through :class:`~mmrec.models.base.RecommenderModule` (HR / NDCG / MRR, ``predict``,
  and faiss retrieval all work; no identifier can be invalid).

Trained: adapters (or LoRA), the visual projector, the backbone's layer norms, whole-word embeddings, the
query / item / text projections (and the ID embedding when enabled). Test metrics are reported for seen
and unseen templates (``test/sequential/{seen,unseen}/...``; ``test/<metric>`` = seen).

Example:
    >>> model = VIP5Ranking(catalog=dm.catalog, backbone="minilm")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.metrics import FullRankingEvaluator
from mmrec.models.base import RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.models.vip5_common import (
    AdapterKind,
    PromptFeatures,
    TrainedWeightsCheckpoint,
    choose_features,
    insert_vip5_adapters,
    load_checked_backbone,
    trainable_summary,
)

log = logging.getLogger(__name__)


@MODELS.register("vip5/ranking")
class VIP5Ranking(TrainedWeightsCheckpoint, RecommenderModule):
    """Full-catalogue ranking head on an encoder-only backbone (registered as ``vip5/ranking``).

    Args:
        catalog: from ``VIP5DataModule.catalog`` (linked by the CLI); use ``tasks: [sequential]``.
        backbone: BERT-like hub id, local directory, or ``minilm`` (bundled, offline).
        backbone_config: tests only: config fields (with ``model_type: bert``) for a random init.
        backbone_tokenizer: tokenizer source when it differs from ``backbone``.
        adapter: an adapter key: ``bottleneck/houlsby`` / ``bottleneck/pfeiffer`` / ``bottleneck/parallel``,
            ``lora/peft``, or ``none`` (full fine-tuning).
        reduction_factor: bottleneck reduction.
        adapter_dropout: dropout inside adapters.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha.
        features: stores feeding the visual tokens (default: ``image``).
        item_text_feature: store whose row is added to the item representation (default: ``text`` when the
            datamodule has it; ``""`` disables).
        use_id_embedding: add a learned ID embedding to item representations (many parameters on big
            catalogues; off by default).
        projector_hidden: hidden width of the visual projector (default: ``k * d / 2``, as VIP5).
        train_layer_norms: train the backbone's layer norms.
        whole_word_embeddings: add whole-word embeddings.
        dim: output dimension of query and item vectors (default: the backbone width).
        pooling: ``mean`` (attention-masked, as sentence-transformers), ``cls``, or ``items`` (mean over the
            positions of the history items' visual tokens: the prompt's item evidence, not its wording).
        temperature: softmax temperature of the cosine scores.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
        init_seed: seeds ``backbone_config`` random init.
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        backbone: str = "minilm",
        backbone_config: dict[str, Any] | None = None,
        backbone_tokenizer: str | None = None,
        adapter: AdapterKind = "bottleneck/houlsby",
        reduction_factor: float = 8,
        adapter_dropout: float = 0.0,
        lora_rank: int = 8,
        lora_alpha: float = 16,
        features: list[str] | None = None,
        item_text_feature: str | None = None,
        use_id_embedding: bool = False,
        projector_hidden: int | None = None,
        train_layer_norms: bool = True,
        whole_word_embeddings: bool = True,
        dim: int | None = None,
        pooling: Literal["mean", "cls", "items"] = "mean",
        temperature: float = 0.05,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (1, 5, 10, 20),
        predict_k: int = 10,
        init_seed: int = 0,
    ) -> None:
        super().__init__(
            catalog=catalog, lr=lr, weight_decay=weight_decay, eval_ks=eval_ks, predict_k=predict_k
        )
        self.save_hyperparameters()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if pooling not in ("mean", "cls", "items"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'items', got {pooling!r}.")
        if list(self.catalog.get("tasks", ["sequential"])) != ["sequential"]:
            raise ValueError(
                "the ranking head trains on the sequential task only: set data.init_args.tasks: [sequential] "
                f"(got {self.catalog.get('tasks')})."
            )
        self.backbone, self.tokenizer, self.backbone_identity = load_checked_backbone(
            self.catalog, backbone, "encoder", backbone_config, backbone_tokenizer, init_seed
        )
        h = int(self.backbone.config.hidden_size)
        self.feature_names = choose_features(self.catalog, features)
        fdims = dict(self.catalog.get("feature_dims") or {})
        self.prompt = PromptFeatures(
            h,
            {n: int(fdims[n]) for n in self.feature_names},
            int(self.catalog.get("visual_tokens", 0)),
            int(self.catalog.get("max_whole_words", 512)) if whole_word_embeddings else 0,
            projector_hidden,
        )
        text = item_text_feature if item_text_feature is not None else ("text" if "text" in fdims else "")
        if text and text not in fdims:
            raise ValueError(
                f"item_text_feature {text!r} is not a datamodule store ({sorted(fdims) or 'none'}); add it to "
                "data.init_args.stores or set item_text_feature: ''."
            )
        self.text_feature = text
        self.text_proj = nn.Linear(int(fdims[text]), h) if text else None
        self.register_buffer("text_table", torch.zeros(1, int(fdims[text]) if text else 1), persistent=False)
        self._text_attached = not text
        self.id_embedding = nn.Embedding(self.num_items + 1, h, padding_idx=0) if use_id_embedding else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        if self.prompt.projector is None and self.text_proj is None and self.id_embedding is None:
            raise ValueError(
                "items would have no representation: give a feature store (features / item_text_feature) or "
                "use_id_embedding: true."
            )
        out_dim = int(dim or h)
        self.query_head = nn.Linear(h, out_dim)
        self.item_head = nn.Linear(h, out_dim)
        self.adapter_handle, self.adapters = insert_vip5_adapters(
            self.backbone,
            adapter,
            reduction_factor=reduction_factor,
            per_task=False,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            dropout=adapter_dropout,
            train_layer_norms=train_layer_norms,
        )
        self.temperature = float(temperature)
        self.unseen_evaluators = nn.ModuleDict(
            {"val": FullRankingEvaluator(ks=self.eval_ks), "test": FullRankingEvaluator(ks=self.eval_ks)}
        )
        log.info("VIP5Ranking %s", trainable_summary(self))

    # ------------------------------------------------------------------ data
    def setup(self, stage: str) -> None:
        """Attach frozen feature tables from the trainer's datamodule (not stored in checkpoints)."""
        if self.prompt.attached and self._text_attached:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "model_inputs"):
            raise RuntimeError(
                "VIP5Ranking needs the VIP5DataModule (mmrec.datamodules.vip5.VIP5DataModule)."
            )
        self.attach_data(dm.model_inputs())

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Attach ``datamodule.model_inputs()`` (feature tables)."""
        tables = inputs["features"]
        if self.feature_names:
            self.prompt.attach(tables)
        if self.text_feature:
            vecs, valid = tables[self.text_feature]
            self.text_table = (vecs.float() * valid.unsqueeze(1).float()).to(self.text_table.device)
            self._text_attached = True
        self._reset_cache()

    # ------------------------------------------------------------------ vectors
    def item_vectors(self) -> torch.Tensor:
        """``(N+1, dim)`` L2-normalised item vectors (row 0 zeros)."""
        n = self.num_items
        dev = self.query_head.weight.device
        rep = torch.zeros(n, self.query_head.in_features, device=dev)
        items = torch.arange(1, n + 1, device=dev)
        if self.prompt.projector is not None:
            rep = rep + self.prompt.item_tokens(items).mean(dim=1)
        if self.text_proj is not None:
            if not self._text_attached:
                raise RuntimeError(
                    "text features are not attached: call model.attach_data(dm.model_inputs())."
                )
            rep = rep + self.text_proj(self.text_table[1:])
        if self.id_embedding is not None:
            rep = rep + self.id_embedding.weight[1:]
        vecs = F.normalize(self.item_head(rep), dim=-1)
        return torch.cat([vecs.new_zeros(1, vecs.shape[1]), vecs])

    def encode_prompts(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled backbone encodings ``(B, h)`` of the prompts."""
        tok = self.backbone.get_input_embeddings()(batch["input_ids"])
        emb = self.prompt(tok, batch["whole_word_ids"], batch["feature_items"], batch["feature_slots"])
        mask = batch["attention_mask"]
        hidden = self.backbone(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        if self.hparams.pooling == "cls":
            return hidden[:, 0]
        if self.hparams.pooling == "items":  # the positions of the history items' feature tokens
            items = batch["feature_items"] > 0
            mask = torch.where(items.any(dim=1, keepdim=True), items, mask.bool())
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, dim)`` query vectors, L2-normalised and divided by the temperature."""
        return F.normalize(self.query_head(self.encode_prompts(batch)), dim=-1) / self.temperature

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Full-softmax cross-entropy of the target item over the catalogue."""
        logits = self.query_vectors(batch) @ self.item_vectors().T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, batch["target_item"])

    # ------------------------------------------------------------------ evaluation (seen / unseen)
    def _split_evaluator(self, stage: str, batch: Mapping[str, Any]) -> FullRankingEvaluator:
        if batch.get("split", "seen") == "unseen":
            return self.unseen_evaluators[stage]
        return self.val_evaluator if stage == "val" else self.test_evaluator

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split_evaluator("val", batch))

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._split_evaluator("test", batch))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.unseen_evaluators["val"].reset()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.unseen_evaluators["test"].reset()

    def _log_split(self, stage: str) -> dict[str, float]:
        out: dict[str, float] = {}
        seen_ev = self.val_evaluator if stage == "val" else self.test_evaluator
        for split, ev in (("seen", seen_ev), ("unseen", self.unseen_evaluators[stage])):
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
        values = self._log_split("test")
        self._write_metrics_file("test", values)


__all__ = ["VIP5Ranking"]
