"""Training and evaluation helpers of the benchmarks: fit with best-epoch selection on a validation metric, per-epoch timing and printing, per-user test metrics, quiet Lightning."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from mmrec.bench.crossdomain_recipe import MONITOR, RecipeError
from mmrec.datamodules.multidomain import MultiDomainDataModule, collate_domain_train
from mmrec.metrics import ranking_metrics
from mmrec.models.knn import ContentKNN
from mmrec.models.transferable import TransferableRecommender


# --------------------------------------------------------------------------------------------- training helpers
def quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*The number of training batches.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: cuda, but CUDA is not available here; use device: auto or cpu.")
    return torch.device(name)


class BestState(L.Callback):
    """Keeps the trainable weights of the best validation epoch (in memory) and the validation history."""

    def __init__(self, monitor: str = MONITOR) -> None:
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = -1
        self.history: list[float] = []
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise RuntimeError(f"{self.monitor} was not logged; the model must log it in validation.")
        v = float(value)
        self.history.append(v)
        if v > self.best:
            self.best, self.best_epoch = v, int(trainer.current_epoch)
            self.state = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def restore(self, module: torch.nn.Module) -> None:
        """Load the best epoch's trainable weights back into ``module``."""
        if self.state is None:
            return
        params = dict(module.named_parameters())
        with torch.no_grad():
            for n, v in self.state.items():
                params[n].copy_(v)


class EpochTimer(L.Callback):
    """Wall-clock seconds of each training epoch, validation excluded."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []
        self._start: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _stop(self) -> None:
        if self._start is not None:
            self._sync()
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()


class EpochPrinter(L.Callback):
    """One progress line per epoch (pre-training)."""

    def __init__(self, prefix: str, printer: Callable[[str], None]) -> None:
        self.prefix = prefix
        self.printer = printer

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        loss = m.get("train/loss")
        self.printer(
            f"{self.prefix} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
            f"train loss {float(loss) if loss is not None else float('nan'):.4f}, "
            f"val NDCG@10 {float(m.get(MONITOR, float('nan'))):.4f}"
        )


@dataclass
class FitResult:
    """What :func:`fit_with_selection` returns."""

    best_epoch: int
    best_val: float
    history: list[float]
    epochs: int
    seconds_per_epoch: float
    cuda_peak_mib: float | None


def fit_with_selection(
    model: TransferableRecommender,
    datamodule: MultiDomainDataModule,
    *,
    max_epochs: int,
    patience: int,
    device: torch.device,
    extra_callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train with early stopping on validation NDCG@10 and restore the best epoch's weights.

    Args:
        model: the model (strategy applied, features attached).
        datamodule: train / validation data.
        max_epochs: epoch limit.
        patience: epochs without validation improvement before stopping.
        device: where to train.
        extra_callbacks: more callbacks (progress lines).

    Returns:
        a :class:`FitResult`; ``model`` holds the best validation epoch's weights afterwards.
    """
    quiet_lightning()
    best = BestState()
    timer = EpochTimer(device)
    stopper = L.pytorch.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=patience, verbose=False)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[best, timer, stopper, *extra_callbacks],
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit(model, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    best.restore(model)
    model.to(device)
    return FitResult(
        best_epoch=best.best_epoch + 1,
        best_val=best.best,
        history=best.history,
        epochs=len(best.history),
        seconds_per_epoch=float(np.mean(timer.seconds)) if timer.seconds else math.nan,
        cuda_peak_mib=peak,
    )


@torch.no_grad()
def evaluate_per_user(
    model: TransferableRecommender | ContentKNN,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    ks: Sequence[int] = (10,),
) -> dict[str, np.ndarray]:
    """Full-ranking metrics per evaluated user (history masked, as in training-time validation).

    Returns:
        ``{"user": (U,) user indices, "hr@K" / "ndcg@K" / "mrr": (U,) float arrays}`` in loader order.
    """
    was_training = model.training
    model.eval()
    model.to(device)
    items = model.item_vectors().detach()
    model._cached_items = items
    out: dict[str, list[np.ndarray]] = {}
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            scores = model.score_all(batch, items)
            per = ranking_metrics(
                scores, batch["targets"], ks=ks, exclude=(batch["exclude_rows"], batch["exclude_cols"])
            )
            out.setdefault("user", []).append(batch["user"].cpu().numpy())
            for k in [*(f"hr@{k}" for k in ks), *(f"ndcg@{k}" for k in ks), "mrr"]:
                out.setdefault(k, []).append(per[k].float().cpu().numpy())
    finally:
        model._reset_cache()
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def probe_batch(datamodule: MultiDomainDataModule) -> dict[str, torch.Tensor]:
    """The memory probe: the ``batch_size`` longest training windows (fixed, so strategies compare)."""
    ds = datamodule.train_dataloader().dataset
    lengths = ds.lengths()
    order = sorted(range(len(ds)), key=lambda i: (-int(lengths[i]), i))[: datamodule.batch_size]
    return collate_domain_train([ds[i] for i in order])
