"""The base LightningModule of every mmrec recommender: evaluation, prediction and optimisation.

A recommender provides two things:

- :meth:`RecommenderModule.item_vectors` -> ``(N+1, d)`` item representations (row 0 = padding), and
- :meth:`RecommenderModule.query_vectors` -> ``(B, d)`` for a batch of users / histories,

so that scores over the whole catalogue are a matrix product, full-ranking evaluation is batched, and a
faiss index can serve the same vectors. Subclasses implement :meth:`training_loss`.

**Models without training** (MostPop, ItemKNN, content-kNN...: whatever they know is computed from the
training split in :meth:`RecommenderModule.attach_data`) set the class attribute ``requires_training = False``
and go through ``mmrec fit`` / ``Trainer.fit`` like every model, with the same callbacks and evaluator:

- :meth:`~RecommenderModule.configure_optimizers` returns ``None`` (no optimizer) and
  :meth:`~RecommenderModule.training_step` returns ``None`` (no loss, no backward), so the one training epoch is
  a pass over the training loader that changes nothing;
- that epoch ends with one validation pass (``val/ndcg@10`` is logged, ``ModelCheckpoint`` writes a checkpoint
  of the buffers), then :meth:`~RecommenderModule.on_train_epoch_end` stops the fit, whatever ``max_epochs``;
- ``mmrec test`` / ``test_after_fit`` then evaluate it as any model.

**Optimisation** is injected the Lightning way: ``optimizer`` (an ``OptimizerCallable``: parameters ->
optimizer) and ``lr_scheduler`` (an ``LRSchedulerCallable``: optimizer -> scheduler), both optional. Without
``optimizer`` a model trains with ``AdamW(lr, weight_decay)``; in YAML::

    model:
      class_path: sequential/sasrec
      init_args:
        optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.05, momentum: 0.9}}
        lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 10}}

An injected optimizer carries its own settings (``lr`` and ``weight_decay`` configure the default AdamW only).
A scheduler steps once per epoch; ``ReduceLROnPlateau`` watches ``val/ndcg@10``. Both are training settings:
the run's ``config.yaml`` records them, the checkpoint's ``hyper_parameters`` do not (a callable would not load
with ``weights_only=True``), so a model loaded from a checkpoint has the default AdamW.

Evaluation (validation and test): full-ranking HR / Recall / NDCG / MRR under the datamodule's protocol
(:mod:`mmrec.eval_protocol`), plus ``coverage@10``, ``same_top10_share`` and the metrics on head, tail and cold
items (:class:`~mmrec.metrics.FullRankingEvaluator`; the item groups come from the training split's
popularity, see :meth:`RecommenderModule.configure_item_groups`). The test run keeps per-user values
(:attr:`RecommenderModule.test_per_user`) and ``test_metrics.json`` names the protocol.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch

from mmrec.catalog import require_catalog
from mmrec.eval_protocol import protocol_of
from mmrec.metrics import FullRankingEvaluator, item_groups
from mmrec.protocols import ModelInputSource

log = logging.getLogger(__name__)

#: length of the lists behind coverage@K and same_topK_share
LIST_K = 10
#: Lightning's notices for a fit without optimizer / loss, expected for models without training
_NO_TRAINING_NOTICES = (
    r".*configure_optimizers` returned `None`.*",
    r".*`training_step` returned `None`.*",
)
#: Lightning's advice to log epoch metrics with ``sync_dist=True`` under DDP: the evaluators' values are already
#: gathered from every rank (FullRankingEvaluator.compute), so the same value is logged on each rank
_SYNCED_METRICS_NOTICE = r".*when logging on epoch level in distributed setting.*"
#: parameters -> optimizer and optimizer -> scheduler: the types LightningCLI reads as ``class_path`` / ``init_args``
#: of a ``torch.optim`` class (the same as ``lightning.pytorch.cli``'s, defined here so that models do not load
#: the CLI machinery)
OptimizerCallable = Callable[[Iterable[Any]], torch.optim.Optimizer]
LRSchedulerCallable = Callable[
    [torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
]
#: constructor arguments that are training callables: never stored in ``hparams`` (see the module docstring)
TRAINING_CALLABLES = ("optimizer", "lr_scheduler")
#: what a ReduceLROnPlateau scheduler watches (logged after every validation)
SCHEDULER_MONITOR = "val/ndcg@10"


class RecommenderModule(L.LightningModule):
    """Common evaluation / prediction / optimiser logic.

    Class attributes:
        requires_training: ``False`` for models with nothing to learn by gradient descent (see the module
            docstring: one optimizer-free epoch, one validation, stop).

    Args:
        catalog: sizes and feature dims from the datamodule (``datamodule.catalog``); linked by the CLI.
        lr: learning rate of the default AdamW.
        weight_decay: weight decay of the default AdamW.
        eval_ks: cut-offs for HR@K / NDCG@K / Recall@K.
        predict_k: how many items ``predict`` returns per user.
        optimizer: parameters -> optimizer (e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``; in YAML a
            ``class_path`` / ``init_args`` of a ``torch.optim`` class); ``None``: ``AdamW(lr, weight_decay)``.
        lr_scheduler: optimizer -> learning-rate scheduler, stepped once per epoch; ``None``: constant rate.

    Example:
        >>> import functools
        >>> class Tiny(RecommenderModule):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(catalog={"num_items": 3, "num_users": 2}, **kwargs)
        ...         self.w = torch.nn.Parameter(torch.zeros(2))
        >>> type(Tiny(lr=0.01).configure_optimizers()).__name__
        'AdamW'
        >>> out = Tiny(optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        ...            lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2)).configure_optimizers()
        >>> type(out["optimizer"]).__name__, type(out["lr_scheduler"]["scheduler"]).__name__
        ('SGD', 'StepLR')
    """

    requires_training: ClassVar[bool] = True

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
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
        for name, value in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)):
            if value is not None and not callable(value):
                raise TypeError(
                    f"{name} must be a callable ({'parameters -> optimizer' if name == 'optimizer' else 'optimizer -> scheduler'}), "
                    f"e.g. functools.partial(torch.optim.SGD, lr=0.1) or in YAML {{class_path: torch.optim.SGD, "
                    f"init_args: {{lr: 0.1}}}}; got {type(value).__name__}."
                )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.eval_ks = tuple(int(k) for k in eval_ks)
        self.predict_k = predict_k
        self.val_evaluator = FullRankingEvaluator(ks=self.eval_ks, ignore_columns=(0,), list_k=LIST_K)
        self.test_evaluator = FullRankingEvaluator(
            ks=self.eval_ks, ignore_columns=(0,), list_k=LIST_K, keep_per_user=True
        )
        self._cached_items: torch.Tensor | None = None
        self.head_fraction = 0.2
        self.cold_max_count = 5
        #: per-user test values of the last test run: ``{"user": (U,), "<metric>": (U,)}`` (see FullRankingEvaluator)
        self.test_per_user: dict[str, torch.Tensor] | None = None

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
        """Attach the datamodule's model inputs (frozen feature tables, interactions...) when it has any, and
        the item groups of the head / tail / cold metrics (from ``train_interactions``)."""
        if not self.requires_training:
            for pattern in _NO_TRAINING_NOTICES:
                warnings.filterwarnings("ignore", message=pattern)
        warnings.filterwarnings("ignore", message=_SYNCED_METRICS_NOTICE)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(dm, ModelInputSource):
            inputs = dm.model_inputs()
            self.attach_data(inputs)
            if "train_interactions" in inputs:
                self.set_item_popularity(np.asarray(inputs["train_interactions"].sum(axis=0)).ravel())

    # ------------------------------------------------------------------ evaluation settings
    def configure_item_groups(self, head_fraction: float = 0.2, cold_max_count: int = 5) -> None:
        """How head, tail and cold items are defined (:func:`mmrec.metrics.item_groups`); applies from the
        next :meth:`set_item_popularity` (the Trainer calls it in ``setup``).

        Args:
            head_fraction: share of the catalogue, most popular first, that is the head (the rest is the tail).
            cold_max_count: items with at most this many training interactions are cold.
        """
        item_groups(torch.zeros(2), head_fraction, cold_max_count)  # checks the values
        self.head_fraction = head_fraction
        self.cold_max_count = cold_max_count

    def set_item_popularity(self, popularity: Any) -> None:
        """Training interaction counts per item column ``(N+1,)`` (column 0 padding): enables the head / tail /
        cold metrics of validation and test."""
        pop = torch.as_tensor(np.asarray(popularity, dtype=np.float64)).flatten()
        if pop.numel() != self.num_items + 1:
            raise ValueError(
                f"item popularity has {pop.numel()} columns, the catalogue {self.num_items + 1} (with padding); "
                "pass the training counts of this catalogue's items."
            )
        groups = item_groups(pop, self.head_fraction, self.cold_max_count, ignore_columns=(0,))
        self.val_evaluator.set_item_groups(groups)
        self.test_evaluator.set_item_groups(groups)

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
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if not self.requires_training:
            return None  # nothing to learn: no loss, no backward, no optimizer step
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

    def on_train_epoch_end(self) -> None:
        if not self.requires_training:  # the epoch's validation has run: a no-training fit is one epoch
            self.trainer.should_stop = True

    def _evaluate(self, batch: Mapping[str, torch.Tensor], evaluator: FullRankingEvaluator) -> None:
        scores = self.score_all(batch, self._eval_items())
        evaluator.update(
            scores,
            batch["targets"],
            exclude=(batch["exclude_rows"], batch["exclude_cols"]),
            users=batch.get("user"),
        )

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.val_evaluator)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
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
        self.test_per_user = self.test_evaluator.per_user()
        values = self._log_metrics("test", self.test_evaluator)
        self._write_metrics_file("test", values)

    def _write_metrics_file(self, prefix: str, values: Mapping[str, float]) -> None:
        # only next to a logger's files: without a logger, log_dir falls back to the working directory
        if self._trainer is None or self.trainer.logger is None:
            return
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not only rank 0
        if log_dir is None or not self.trainer.is_global_zero:
            return
        path = Path(log_dir) / f"{prefix}_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        protocol = protocol_of(getattr(self.trainer, "datamodule", None))
        record = {**values, "protocol": protocol.as_dict() if protocol is not None else "not declared"}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

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

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Lightning's ``save_hyperparameters``, never storing the training callables (``optimizer``,
        ``lr_scheduler``): checkpoints must load with ``weights_only=True``."""
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        ignored = [ignore] if isinstance(ignore, str) else list(ignore or ())
        super().save_hyperparameters(
            *args, ignore=[*ignored, *TRAINING_CALLABLES], frame=frame, logger=logger
        )

    def configure_optimizers(self) -> Any:
        """The injected optimizer (default ``AdamW(lr, weight_decay)``) over the trainable parameters, with the
        injected scheduler when there is one; ``None`` for models without training."""
        if not self.requires_training:
            return None
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(
                "the model has no trainable parameters; a model that learns nothing by gradient descent sets "
                "`requires_training = False` (see mmrec.models.base)."
            )
        if self.optimizer_factory is None:
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=self.lr, weight_decay=self.weight_decay
            )
        else:
            optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": SCHEDULER_MONITOR},
        }

    # ------------------------------------------------------------------ helpers
    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total}
