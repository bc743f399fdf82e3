"""VIP5 (Geng et al., 2023): a frozen T5 with visual tokens, whole-word embeddings and adapters.

Faithful to the paper and its official code:

- **backbone**: any T5-family encoder-decoder (``t5-small`` by default; hub id or local directory),
  frozen;
- **visual tokens**: each item's cached CLIP image embedding (any feature store named in ``features``)
  is mapped by ``mmrec.adapters``' ``VisualProjector`` (2-layer MLP + LayerNorm) to ``k`` tokens of the
  backbone width, written at that item's ``k`` placeholders in the prompt (one batched gather);
- **adapters**: bottleneck adapters (reduction 8, Houlsby placement by default: after self-attention,
  cross-attention and feed-forward of every encoder and decoder block), one shared adapter or one per task
  family routed per sample; or LoRA through ``peft``;
- **trained**: adapters, the visual projector, every layer norm of the backbone and the whole-word
  embedding table (P5's whole-word embeddings, zero-initialised so training starts from the backbone's
  own embeddings); everything else is frozen;
- **tasks**: sequential (A), direct (B: yes/no and choose-from-candidates) and explanation (C) prompts
  mixed in one batch (see :class:`mmrec.datamodules.vip5.VIP5DataModule`); the loss is the token-mean
  cross-entropy of each sample, averaged over the batch (as P5).

Evaluation (per task and per template split, logged as ``{val,test}/<task>/<seen|unseen>/<metric>``):

- sequential: beam search constrained by a trie of the item identifiers (every generated item exists;
  with the datamodule's ``mask_history`` the user's history items are pruned from the trie per user),
  ``num_beams`` items ranked by likelihood -> HR@k, NDCG@k and ``mrr@<num_beams>`` (a target outside
  the beams scores 0);
- direct: the 1 + ``negatives`` saved candidates ranked by the model's log-likelihood of each candidate's
  identifier (choose prompts) or by ``log P(yes)`` (yes/no prompts) -> HR@K, NDCG@K on candidates;
- explanation: generated text (beam search) vs the reference -> BLEU-4 on words, ROUGE-1/2/L.

Checkpoints hold only the trained weights and the hyper-parameters (frozen backbone weights are dropped
and restored from ``backbone`` on load, after an identity check).

Example:
    >>> model = VIP5(catalog=dm.catalog, backbone=BackboneConfig(name="t5-small"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F

from mmrec.config_groups import as_config, plain_hparams
from mmrec.metrics import sampled_ranking_metrics
from mmrec.models.registry import MODELS
from mmrec.models.vip5_common import (
    PromptFeatures,
    TrainedWeightsCheckpoint,
    choose_features,
    insert_vip5_adapters,
    load_checked_backbone,
    routed,
    trainable_summary,
)
from mmrec.models.vip5_config import (
    AdapterConfig,
    BackboneConfig,
    GenerationEvalConfig,
    OptimConfig,
    PromptFeatureConfig,
)
from mmrec.models.vip5_generation import ItemTrie, decode_items, prefix_allowed_fn, ranked_list_metrics
from mmrec.prompts import TASKS
from mmrec.text_metrics import bleu, rouge

if TYPE_CHECKING:  # transformers is imported when the backbone is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

LABEL_PAD = -100

# defaults (frozen dataclasses: one shared instance each is safe)
_BACKBONE = BackboneConfig(name="t5-small")
_ADAPTER = AdapterConfig()
_FEATURES = PromptFeatureConfig(standardize=False)
_OPTIM = OptimConfig(lr=1e-3, weight_decay=0.01)
_DECODING = GenerationEvalConfig()


@MODELS.register("vip5/t5")
class VIP5(TrainedWeightsCheckpoint, L.LightningModule):
    """The generative VIP5 model (registered as ``vip5/t5``).

    Args:
        catalog: from ``VIP5DataModule.catalog`` (linked by the CLI).
        backbone: the frozen T5-family backbone (default ``t5-small``).
        adapter: the adapter method by registry key (default Houlsby bottlenecks, reduction 8, shared by
            the tasks; ``per_task: true`` routes one per task family).
        features: the stores feeding the visual tokens (raw, as VIP5: ``standardize: false``).
        optim: AdamW and warm-up.
        decoding: cut-offs, beams and explanation decoding.
    """

    backbone: PreTrainedModel

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        backbone: BackboneConfig = _BACKBONE,
        adapter: AdapterConfig = _ADAPTER,
        features: PromptFeatureConfig = _FEATURES,
        optim: OptimConfig = _OPTIM,
        decoding: GenerationEvalConfig = _DECODING,
    ) -> None:
        super().__init__()
        if catalog is None:
            raise ValueError(
                "catalog is required: the CLI links it from the VIP5DataModule; in Python pass catalog=dm.catalog."
            )
        backbone = as_config(BackboneConfig, backbone, "backbone")
        adapter = as_config(AdapterConfig, adapter, "adapter")
        features = as_config(PromptFeatureConfig, features, "features")
        optim = as_config(OptimConfig, optim, "optim")
        decoding = as_config(GenerationEvalConfig, decoding, "decoding")
        self.save_hyperparameters()
        plain_hparams(self)  # dataclass groups -> dicts (checkpoints load with weights_only=True)
        self.optim_config, self.eval_config = optim, decoding
        self.catalog = dict(catalog)
        self.backbone, self.tokenizer, self.backbone_identity = load_checked_backbone(
            self.catalog, backbone, "seq2seq"
        )
        d = int(self.backbone.config.d_model)
        self.feature_names = choose_features(self.catalog, features.stores)
        dims = {n: int(self.catalog["feature_dims"][n]) for n in self.feature_names}
        self.prompt = PromptFeatures(
            d,
            dims,
            int(self.catalog.get("visual_tokens", 0)),
            int(self.catalog.get("max_whole_words", 512)) if features.whole_word_embeddings else 0,
            features.projector_hidden,
            standardize=features.standardize,
        )
        self.adapter_handle, self.adapters = insert_vip5_adapters(
            self.backbone, adapter, train_layer_norms=backbone.train_layer_norms
        )
        self.pad_id = int(self.catalog["pad_token_id"])
        self.eos_id = int(self.catalog["eos_token_id"])
        start = getattr(self.backbone.config, "decoder_start_token_id", None)
        if start is None:
            start = getattr(getattr(self.backbone, "generation_config", None), "decoder_start_token_id", None)
        self.start_id = int(start if start is not None else self.pad_id)
        self.yes_id, self.no_id = (int(x) for x in self.catalog["answer_token_ids"])
        self.eval_ks = tuple(decoding.eval_ks)
        self._item_sequences: list[list[int]] | None = None
        self._trie: ItemTrie | None = None
        self._acc: dict[str, dict[str, Any]] = {}
        log.info("VIP5 %s", trainable_summary(self))

    # ------------------------------------------------------------------ data attached at setup
    def setup(self, stage: str) -> None:
        """Attach item features and identifier sequences from the trainer's datamodule."""
        if self.prompt.attached and self._trie is not None:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "model_inputs"):
            raise RuntimeError("VIP5 needs the VIP5DataModule (mmrec.datamodules.vip5.VIP5DataModule).")
        self.attach_data(dm.model_inputs())

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Attach ``datamodule.model_inputs()``: feature tables and item identifier token sequences."""
        if self.feature_names:
            self.prompt.attach(inputs["features"])
        self._item_sequences = [list(s) for s in inputs["item_sequences"]]
        self._trie = ItemTrie(self._item_sequences)

    @property
    def trie(self) -> ItemTrie:
        if self._trie is None:
            raise RuntimeError(
                "item identifiers are not attached: call model.attach_data(dm.model_inputs())."
            )
        return self._trie

    # ------------------------------------------------------------------ forward pieces
    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Prompt input embeddings ``(B, L, d)``: token embeddings + whole-word embeddings, visual tokens
        written at the placeholders."""
        tok = self.backbone.get_input_embeddings()(batch["input_ids"])
        return self.prompt(tok, batch["whole_word_ids"], batch["feature_items"], batch["feature_slots"])

    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encoder hidden states ``(B, L, d)`` (call inside :func:`routed` for per-task adapters)."""
        return self.backbone.get_encoder()(
            inputs_embeds=self.embed(batch), attention_mask=batch["attention_mask"]
        ).last_hidden_state

    def _generate(self, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate(**kwargs)``: token ids ``(B * num_return_sequences, T)``."""
        from transformers import GenerationMixin  # already loaded with the backbone

        # load_backbone built it with AutoModelForSeq2SeqLM, whose models all generate
        assert isinstance(self.backbone, GenerationMixin)
        return self.backbone.generate(**kwargs)

    def _decoder_inputs(self, labels: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(labels[:, :1], self.start_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == LABEL_PAD, self.pad_id)

    def logits(self, batch: Mapping[str, torch.Tensor], labels: torch.Tensor, task: Any) -> torch.Tensor:
        """Teacher-forced decoder logits ``(B, T, V)`` for ``labels (B, T)``."""
        with routed(self.adapter_handle, task):
            out = self.backbone(
                inputs_embeds=self.embed(batch),
                attention_mask=batch["attention_mask"],
                decoder_input_ids=self._decoder_inputs(labels),
                use_cache=False,
            )
        return out.logits

    def per_sample_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B,)`` token-mean cross-entropy of each sample's target."""
        labels = batch["labels"]
        logits = self.logits(batch, labels, batch["task_ids"])
        tok = F.cross_entropy(
            logits.transpose(1, 2).float(), labels, ignore_index=LABEL_PAD, reduction="none"
        )
        n = (labels != LABEL_PAD).sum(dim=1).clamp(min=1)
        return tok.sum(dim=1) / n

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Batch training loss (mean over samples of the token-mean loss)."""
        return self.per_sample_loss(batch).mean()

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.per_sample_loss(batch)
        loss = losses.mean()
        bs = int(losses.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for t, name in enumerate(TASKS):
            sel = batch["task_ids"] == t
            if bool(sel.any()):
                self.log(f"train/{name}/loss", losses[sel].mean(), batch_size=int(sel.sum()))
        return loss

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate_items(self, batch: Mapping[str, torch.Tensor], num_beams: int | None = None) -> torch.Tensor:
        """Constrained beam search over item identifiers.

        When the batch carries ``exclude_rows`` / ``exclude_cols`` (the datamodule's ``mask_history``), the
        trie is pruned per row so that none of the row's excluded items (its history) can be generated:
        the K beams rank only the remaining items, as full-ranking evaluation masks history.

        Returns:
            ``(B, K)`` item indices ranked by likelihood, ``K = min(num_beams, #items - #excluded)``; every
            entry is a valid item (``-1`` only if the decoder ran out of distinct identifiers).
        """
        trie = self.trie
        exclude = _exclusions(batch)
        most_excluded = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        k = min(int(num_beams or self.eval_config.num_beams), trie.num_items - most_excluded)
        depth = max(len(s) for s in self._item_sequences or [[0]])
        task = batch.get("task", "sequential")
        with routed(self.adapter_handle, task if isinstance(task, str) else batch["task_ids"]):
            out = self._generate(
                inputs_embeds=self.embed(batch),
                attention_mask=batch["attention_mask"],
                num_beams=k,
                num_return_sequences=k,
                max_new_tokens=depth,
                prefix_allowed_tokens_fn=prefix_allowed_fn(trie, self.pad_id, self.eos_id, exclude),
                length_penalty=float(self.eval_config.length_penalty),
                early_stopping=True,
                do_sample=False,
                decoder_start_token_id=self.start_id,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
            )
        items = torch.tensor(decode_items(trie, out, self.pad_id, self.eos_id), device=out.device)
        ranked = _dedupe_rows(items.view(-1, k))
        want = int(num_beams or self.eval_config.num_beams)
        if k < want:  # fewer items left than beams: empty slots, so cut-offs keep their meaning
            ranked = torch.cat([ranked, ranked.new_full((ranked.shape[0], want - k), -1)], dim=1)
        return ranked

    @torch.no_grad()
    def score_candidates(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Direct task: ``(B, C)`` scores of the candidates (higher = recommended).

        ``choose`` prompts: log-likelihood of each candidate's identifier given the prompt listing them;
        ``yes_no`` prompts (one per candidate): ``log P(first token = yes)``.
        """
        cands = batch["candidates"]
        b, c = cands.shape
        chunk = int(self.eval_config.candidate_chunk)
        if batch.get("kind") == "yes_no":
            scores = []
            rows = batch["input_ids"].shape[0]
            for s in range(0, rows, chunk * 4):
                part = {k: v[s : s + chunk * 4] for k, v in batch.items() if k in _PROMPT_KEYS}
                labels = torch.full_like(part["input_ids"][:, :1], self.yes_id)
                lp = self.logits(part, labels, "direct")[:, 0].float().log_softmax(-1)
                scores.append(lp[:, self.yes_id])
            return torch.cat(scores).view(b, c)
        with routed(self.adapter_handle, "direct"):
            enc = self.encode(batch)
            seqs = self._item_sequences or []
            labels = _pad_labels([[seqs[i] for i in row] for row in cands.tolist()], enc.device)  # (B, C, T)
            out = torch.empty(b, c, device=enc.device)
            for s in range(0, c, chunk):
                lab = labels[:, s : s + chunk]  # (B, c', T)
                cc = lab.shape[1]
                flat = lab.reshape(b * cc, -1)
                dec = self.backbone(
                    encoder_outputs=(enc.repeat_interleave(cc, 0),),
                    attention_mask=batch["attention_mask"].repeat_interleave(cc, 0),
                    decoder_input_ids=self._decoder_inputs(flat),
                    use_cache=False,
                )
                lp = dec.logits.float().log_softmax(-1)
                tok = lp.gather(-1, flat.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (flat != LABEL_PAD)
                out[:, s : s + cc] = tok.sum(-1).view(b, cc)
        return out

    @torch.no_grad()
    def generate_text(self, batch: Mapping[str, Any]) -> list[str]:
        """Explanations generated by beam search (``explanation_beams``), decoded without special tokens."""
        with routed(self.adapter_handle, "explanation"):
            out = self._generate(
                inputs_embeds=self.embed(batch),
                attention_mask=batch["attention_mask"],
                num_beams=int(self.eval_config.explanation_beams),
                max_new_tokens=int(self.eval_config.explanation_max_tokens),
                do_sample=False,
                decoder_start_token_id=self.start_id,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
            )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    # ------------------------------------------------------------------ evaluation
    def _stage(self) -> str:
        return "test" if self.trainer.testing else "val"

    def on_validation_epoch_start(self) -> None:
        self._acc = {}

    def on_test_epoch_start(self) -> None:
        self._acc = {}

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch)

    def _evaluate(self, batch: Mapping[str, Any]) -> None:
        task, split = batch["task"], batch["split"]
        acc = self._acc.setdefault(f"{task}/{split}", {"n": 0, "sums": {}, "hyps": [], "refs": []})
        if task == "explanation":
            acc["hyps"].extend(self.generate_text(batch))
            acc["refs"].extend(batch["references"])
            acc["n"] += len(batch["references"])
            return
        if task == "sequential":
            ranked = self.generate_items(batch)
            values = ranked_list_metrics(ranked, batch["target_item"], self.eval_ks)
        else:
            values = sampled_ranking_metrics(self.score_candidates(batch), batch["positive"], self.eval_ks)
        for name, v in values.items():
            if name.startswith("recall@"):
                continue  # = hr@K with one target
            acc["sums"][name] = acc["sums"].get(name, 0.0) + float(v.sum())
        acc["n"] += int(next(iter(values.values())).shape[0])

    def _gathered(self) -> dict[str, dict[str, Any]]:
        """The evaluation accumulators merged over processes (DDP); this process's alone otherwise."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._acc
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self._acc)
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for key, acc in (part or {}).items():
                m = merged.setdefault(key, {"n": 0, "sums": {}, "hyps": [], "refs": []})
                m["n"] += acc["n"]
                m["hyps"].extend(acc["hyps"])
                m["refs"].extend(acc["refs"])
                for name, v in acc["sums"].items():
                    m["sums"][name] = m["sums"].get(name, 0.0) + v
        return merged

    def _finish(self, stage: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, acc in sorted(self._gathered().items()):
            n = acc["n"]
            if not n:
                continue
            if key.startswith("explanation"):
                out[f"{stage}/{key}/bleu4"] = bleu(acc["hyps"], acc["refs"])
                for name, v in rouge(acc["hyps"], acc["refs"]).items():
                    out[f"{stage}/{key}/{name}"] = v
            else:
                for name, s in acc["sums"].items():
                    out[f"{stage}/{key}/{name}"] = s / n
            out[f"{stage}/{key}/num_examples"] = float(n)
        for name, value in out.items():
            self.log(name, value, sync_dist=False)
        self._acc = {}
        return out

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._finish("val")
        else:
            self._acc = {}

    def on_test_epoch_end(self) -> None:
        values = self._finish("test")
        if self.trainer is not None and self.trainer.is_global_zero and self.trainer.log_dir is not None:
            path = Path(self.trainer.log_dir) / "test_metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("VIP5 has no trainable parameters (adapter: none and nothing else trained?).")
        opt = torch.optim.AdamW(params, lr=self.optim_config.lr, weight_decay=self.optim_config.weight_decay)
        warm = int(self.optim_config.warmup_steps)
        if warm <= 0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


_PROMPT_KEYS = ("input_ids", "attention_mask", "whole_word_ids", "feature_items", "feature_slots")


def _pad_labels(rows: Sequence[Sequence[Sequence[int]]], device: torch.device) -> torch.Tensor:
    width = max(1, max(len(s) for row in rows for s in row))
    out = torch.full((len(rows), len(rows[0]), width), LABEL_PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        for j, s in enumerate(row):
            out[i, j, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out.to(device)


def _exclusions(batch: Mapping[str, Any]) -> list[list[int]] | None:
    """Per-row excluded items from ``exclude_rows`` / ``exclude_cols`` (``None`` when the batch has none)."""
    rows, cols = batch.get("exclude_rows"), batch.get("exclude_cols")
    if rows is None or cols is None:
        return None
    out: list[list[int]] = [[] for _ in range(int(batch["input_ids"].shape[0]))]
    for r, c in zip(rows.tolist(), cols.tolist()):
        out[r].append(c)
    return out


def _dedupe_rows(items: torch.Tensor) -> torch.Tensor:
    """Keep the first occurrence of each item per row (later duplicates and invalid entries become -1)."""
    out = items.clone()
    for r, row in enumerate(items.tolist()):
        seen: set[int] = set()
        for j, it in enumerate(row):
            if it < 1 or it in seen:
                out[r, j] = -1
            seen.add(it)
    return out


__all__ = ["VIP5"]
