"""The base LightningModule of every mmrec recommender: evaluation, prediction and optimisation.

A recommender provides two things:

- :meth:`RecommenderModule.item_vectors` -> ``(N+1, d)`` item representations (row 0 = padding), and
- :meth:`RecommenderModule.query_vectors` -> ``(B, d)`` for a batch of users / histories,

so that scores over the whole catalogue are a matrix product, full-ranking evaluation is batched, and a
faiss index can serve the same vectors. Subclasses implement :meth:`training_loss`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mmrec.catalog import require_catalog
from mmrec.metrics import FullRankingEvaluator
from mmrec.protocols import ModelInputSource

log = logging.getLogger(__name__)


class RecommenderModule(L.LightningModule):
    """Common evaluation / prediction / optimiser logic.

    Args:
        catalog: sizes and feature dims from the datamodule (``datamodule.catalog``); linked by the CLI.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        eval_ks: cut-offs for HR@K / NDCG@K / Recall@K.
        predict_k: how many items ``predict`` returns per user.
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
    ) -> None:
        super().__init__()
        self.catalog = require_catalog(catalog)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if not eval_ks or min(eval_ks) < 1:
            raise ValueError(f"eval_ks must be positive cut-offs, got {eval_ks}.")
        self.num_items = int(self.catalog["num_items"])
        self.num_users = int(self.catalog["num_users"])
        self.lr = lr
        self.weight_decay = weight_decay
        self.eval_ks = tuple(int(k) for k in eval_ks)
        self.predict_k = predict_k
        self.val_evaluator = FullRankingEvaluator(ks=self.eval_ks)
        self.test_evaluator = FullRankingEvaluator(ks=self.eval_ks)
        self._cached_items: torch.Tensor | None = None

    # ------------------------------------------------------------------ to implement
    def item_vectors(self) -> torch.Tensor:
        """``(N+1, d)`` item representations; row 0 (padding) is never recommended."""
        raise NotImplementedError

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, d)`` user / history representations for a batch."""
        raise NotImplementedError

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss for a batch."""
        raise NotImplementedError

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Take the data the model needs besides its weights from ``inputs`` (``datamodule.model_inputs()``,
        a lazy mapping: only the keys read are loaded). Default: nothing. Called by :meth:`setup` and by
        serving code (:class:`~mmrec.retrieval.recommender.Recommender`)."""

    def setup(self, stage: str) -> None:
        """Attach the datamodule's model inputs (frozen feature tables, interactions...) when it has any."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(dm, ModelInputSource):
            self.attach_data(dm.model_inputs())

    # ------------------------------------------------------------------ scoring
    def score_all(
        self, batch: Mapping[str, torch.Tensor], item_vecs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores over the whole catalogue.

        Args:
            batch: a ranking batch (``input_ids``...).
            item_vecs: precomputed :meth:`item_vectors` (reused across an evaluation epoch).

        Returns:
            ``(B, N+1)`` scores; column 0 (padding) is ``-inf``.
        """
        items = item_vecs if item_vecs is not None else self.item_vectors()
        scores = self.query_vectors(batch) @ items.T
        scores[:, 0] = float("-inf")
        return scores

    def _eval_items(self) -> torch.Tensor:
        if self._cached_items is None:
            self._cached_items = self.item_vectors().detach()
        return self._cached_items

    def _reset_cache(self) -> None:
        self._cached_items = None

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["input_ids"].shape[0]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._reset_cache()
        self.val_evaluator.reset()

    def on_test_epoch_start(self) -> None:
        self._reset_cache()
        self.test_evaluator.reset()

    def on_predict_epoch_start(self) -> None:
        self._reset_cache()

    def _evaluate(self, batch: Mapping[str, torch.Tensor], evaluator: FullRankingEvaluator) -> None:
        scores = self.score_all(batch, self._eval_items())
        evaluator.update(scores, batch["targets"], exclude=(batch["exclude_rows"], batch["exclude_cols"]))

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_evaluator)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_evaluator)

    def _log_metrics(self, prefix: str, evaluator: FullRankingEvaluator) -> dict[str, float]:
        values = {k: float(v) for k, v in evaluator.compute().items()}
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, prog_bar=name in ("ndcg@10", "hr@10"), sync_dist=False)
        self._reset_cache()
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_evaluator)

    def on_test_epoch_end(self) -> None:
        values = self._log_metrics("test", self.test_evaluator)
        self._write_metrics_file("test", values)

    def _write_metrics_file(self, prefix: str, values: Mapping[str, float]) -> None:
        # only next to a logger's files: without a logger, log_dir falls back to the working directory
        if self._trainer is None or not self.trainer.is_global_zero or self.trainer.logger is None:
            return
        if self.trainer.log_dir is None:
            return
        path = Path(self.trainer.log_dir) / f"{prefix}_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(values), indent=2) + "\n", encoding="utf-8")

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Top-``predict_k`` items per user with known items excluded.

        Returns:
            ``{"user": (B,), "items": (B, k) item indices (1..N), "scores": (B, k)}``.
        """
        scores = self.score_all(batch, self._eval_items())
        rows, cols = batch.get("exclude_rows"), batch.get("exclude_cols")
        if rows is not None and cols is not None and rows.numel():
            scores[rows, cols] = float("-inf")
        k = min(self.predict_k, self.num_items)
        top = scores.topk(k, dim=1)
        return {"user": batch["user"], "items": top.indices, "scores": top.values}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("the model has no trainable parameters.")
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ helpers
    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total}
