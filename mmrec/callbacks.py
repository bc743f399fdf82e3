"""Lightning callbacks of mmrec: prediction files, one-line progress for logs, reproducible resuming.

- :class:`JsonlPredictionWriter`: ``predict`` output as JSON lines (``--trainer.callbacks+=
  mmrec.callbacks.JsonlPredictionWriter --trainer.callbacks.output=preds.jsonl``).
- :class:`ProgressLines`: periodic one-line progress (step, loss, speed) and one line per epoch
  with its metrics, for runs whose output goes to a file or a pipe, where progress bars print nothing
  useful. ``mmrec fit`` adds it when stdout is not a terminal.
- :class:`ModelCheckpoint`: Lightning's, except that ``last.ckpt`` is rewritten at the end of EVERY epoch
  (Lightning 2.6 rewrites it only when a top-k checkpoint is written), so ``--ckpt_path last.ckpt``
  resumes from the true last epoch. ``mmrec fit`` upgrades a plain Lightning ``ModelCheckpoint`` to it.
- :class:`EpochSeed`: re-seeds torch / numpy / random at the start of every training epoch from
  ``(seed, epoch)``, so dropout, negative sampling and masking of epoch ``e`` are the same whether the run
  went through epoch ``e`` in one go or was resumed from a checkpoint. ``mmrec fit`` always adds it.

Example:
    >>> ProgressLines(every_seconds=60).every_seconds
    60.0
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``predict`` output as JSON lines: ``{"user_id", "items": [item ids], "scores": [...]}``.

    Args:
        output: file to write (parent folders are created).
    """

    def __init__(self, output: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self, trainer: Any, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        dm: LightningDataModule | None = trainer.datamodule
        user_ids = getattr(dm, "user_ids", None)
        item_ids = getattr(dm, "item_ids", None)
        path = Path(self.output).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for batch in predictions:
                users = batch["user"].tolist()
                items = batch["items"].tolist()
                scores = batch["scores"].to(torch.float32).tolist()
                for u, its, scs in zip(users, items, scores):
                    rec = {
                        "user_id": user_ids[u] if user_ids else u,
                        "items": [item_ids[i - 1] if item_ids else i for i in its],
                        "scores": [round(s, 6) for s in scs],
                    }
                    f.write(json.dumps(rec) + "\n")
                    n += 1
        print(f"[mmrec] wrote {n} recommendation lists to {path}")


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"


class ProgressLines(Callback):
    """Progress as plain lines: during training at most one line every ``every_seconds``, and one line per
    epoch with its training and validation metrics.

    Epochs are counted from 1 (Lightning's checkpoint names count from 0). Lines look like::

        [mmrec] epoch 3/30 step 120/400 (30%) train/loss 5.8123 12.4 it/s
        [mmrec] epoch 3/30 done in 9.6s: train/loss 5.7004 val/hr@10 0.1120 val/ndcg@10 0.0563

    Args:
        every_seconds: shortest time between two training lines.
        metrics: the logged metrics shown at the end of an epoch, when logged (the others, and group
            metrics such as ``val/sequential/seen/hr@10``, are in the logger's metrics file).
        stream: where to write (default: stdout).
    """

    def __init__(
        self,
        every_seconds: float = 30.0,
        metrics: tuple[str, ...] = ("train/loss", "val/hr@10", "val/ndcg@10", "val/mrr", "val/bleu4"),
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.every_seconds = float(every_seconds)
        self.metrics = tuple(metrics)
        self.stream = stream
        self._last = 0.0
        self._epoch_start = 0.0
        self._steps_at_last = 0

    def _print(self, trainer: Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(f"[mmrec] {text}", file=self.stream or sys.stdout, flush=True)

    def _epoch(self, trainer: Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._last = time.perf_counter()
        self._steps_at_last = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if now - self._last < self.every_seconds:
            return
        steps = batch_idx + 1
        total = trainer.num_training_batches
        share = f" ({100 * steps / total:.0f}%)" if isinstance(total, int) and total > 0 else ""
        rate = (steps - self._steps_at_last) / max(now - self._last, 1e-9)
        loss = trainer.callback_metrics.get("train/loss")
        shown = f" train/loss {_fmt(loss)}" if loss is not None else ""
        total_s = total if isinstance(total, int) else "?"
        self._print(trainer, f"{self._epoch(trainer)} step {steps}/{total_s}{share}{shown} {rate:.1f} it/s")
        self._last, self._steps_at_last = now, steps

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # called after the epoch's validation: callback_metrics hold its val/* values
        self._print(
            trainer,
            f"{self._epoch(trainer)} done in {time.perf_counter() - self._epoch_start:.1f}s: "
            + self.summary(trainer.callback_metrics),
        )

    def summary(self, metrics: Mapping[str, Any]) -> str:
        """``name value`` pairs of the :attr:`metrics` that were logged."""
        shown = [f"{k} {_fmt(metrics[k])}" for k in self.metrics if k in metrics]
        return " ".join(shown) or "(no metrics logged)"


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is the state after the LAST epoch.

    Lightning 2.6 writes ``last.ckpt`` only in the steps where it also writes a top-k checkpoint, so after
    the best epoch ``last.ckpt`` stays a copy of the best one and ``--ckpt_path last.ckpt`` goes back in
    time. Here, with ``save_last: true``, ``last.ckpt`` is (re)written at the end of every epoch (after
    validation when validation runs), whatever the monitored metric did. All arguments are Lightning's.

    Example:
        >>> ModelCheckpoint(monitor="val/ndcg@10", mode="max", save_last=True).save_last
        True
    """

    def _refresh_last(self, trainer: Trainer, at_train_epoch_end: bool) -> None:
        if not self.save_last or at_train_epoch_end != self._should_save_on_train_epoch_end(trainer):
            return
        if trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            return  # Lightning already wrote (top-k and last) at this step
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=False)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of training epoch ``epoch`` of a run seeded with ``seed`` (a 32-bit value).

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1)[0])


class EpochSeed(Callback):
    """Re-seeds ``torch`` (every device), ``numpy`` and ``random`` at the start of every training epoch.

    Lightning does not save the random generators' state in checkpoints, so without this a run resumed
    from ``last.ckpt`` draws other dropout masks and negatives than the uninterrupted run. With it, what
    epoch ``e`` draws depends only on ``(seed, e)``: a resumed run reproduces the uninterrupted one.
    (Training samplers must likewise shuffle from ``(seed, epoch)`` via ``set_epoch``, as mmrec's do.)

    Args:
        seed: base seed; ``None`` = the one given to ``seed_everything`` (``PL_GLOBAL_SEED``); when there
            is none either, nothing is re-seeded (the run did not ask to be reproducible).
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed

    def base_seed(self) -> int | None:
        if self.seed is not None:
            return int(self.seed)
        env = os.environ.get("PL_GLOBAL_SEED")
        return int(env) if env not in (None, "") else None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        base = self.base_seed()
        if base is None:
            return
        # Creating a DataLoader iterator draws a worker base seed from the loader's generator, or from the
        # global one when it has none. Lightning creates the iterator before this hook in the first epoch
        # of a run (fresh or resumed) and after it in the others, so that draw would shift every random
        # number of a resumed epoch: give such loaders their own generator.
        loaders = trainer.train_dataloader
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
                loader.generator = torch.Generator().manual_seed(base)
        s = epoch_seed(base, trainer.current_epoch)
        torch.manual_seed(s)  # seeds CUDA too
        np.random.seed(s)
        random.seed(s)
