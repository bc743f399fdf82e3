"""Runs of the quality benchmark: every model of a recipe x every seed, through Lightning and the registries.

One run = one (model entry, seed):

1. the recipe's DataModule from ``DATAMODULES`` (``data.args`` + the entry's ``data`` overrides, ``seed``
   = the run's seed), the model from ``MODELS`` (``catalog`` linked from the datamodule), the item-group
   definitions of the recipe (:meth:`~mmrec.models.base.RecommenderModule.configure_item_groups`);
2. ``Trainer.fit`` with early stopping on the validation monitor (``val/ndcg@10``); :class:`KeepBest` keeps the
   weights and buffers of the best validation epoch in memory and puts them back after the fit (models
   without training run their one optimizer-free epoch, see :mod:`mmrec.models.base`);
3. ``Trainer.test`` of those weights: test metrics (the same evaluator as ``mmrec test``) and the per-user
   values kept for the paired tests;
4. ``runs/<label>__seed<k>.json`` is written. A later call finds it and reuses it when its ``run_key`` (hash of
   dataset fingerprint, protocol, entry, seed, trainer and group settings) is the same (``rerun: true``
   recomputes).

Seconds per epoch are training wall-clock (validation excluded). Memory: peak
``torch.cuda.max_memory_allocated`` on CUDA; on CPU the estimate of :func:`mmrec.bench.memory.training_memory`
for one AdamW step on a fixed probe batch (the ``batch_size`` longest training sequences).

Example:
    >>> record = QualityRunner(cfg).run_one(cfg.models[0], seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from mmrec import __version__
from mmrec.bench.fitting import EpochTimer, quiet_lightning
from mmrec.bench.memory import training_memory
from mmrec.bench.quality.config import ModelEntry, QualityConfig
from mmrec.datamodules.registry import DATAMODULES
from mmrec.eval_protocol import protocol_of
from mmrec.models.registry import MODELS

#: bumped when what a run computes changes for the same inputs (part of every run key)
RUN_REVISION = 1
#: per-user metrics stored in the run JSON (paired tests use ndcg@10)
PER_USER_METRICS = ("ndcg@10", "hr@10")


class KeepBest(L.Callback):
    """Keeps the state (weights and buffers) and validation metrics of the best epoch of ``monitor``.

    Args:
        monitor: the validation metric (higher is better).
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = -1
        self.history: list[float] = []
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise RuntimeError(
                f"{self.monitor} was not logged in validation; set trainer.monitor to a logged metric "
                f"(logged: {sorted(trainer.callback_metrics)[:12]}...)."
            )
        v = float(value)
        self.history.append(v)
        if v > self.best:
            self.best, self.best_epoch = v, int(trainer.current_epoch)
            self.state = {k: t.detach().clone() for k, t in pl_module.state_dict().items()}
            self.metrics = {
                k[len("val/") :]: float(t)
                for k, t in trainer.callback_metrics.items()
                if k.startswith("val/")
            }

    def restore(self, module: torch.nn.Module) -> None:
        """Load the best epoch's state back into ``module`` (nothing when no validation ran)."""
        if self.state is not None:
            module.load_state_dict(self.state)


def run_key(payload: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def slug(label: str) -> str:
    """A file-name-safe version of a row label."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _probe_batch(datamodule: Any) -> dict[str, torch.Tensor] | None:
    """The memory probe: the ``batch_size`` training examples with the most real (non-padding) inputs, collated
    by the training loader's own ``collate_fn`` (the first batch when examples are not dicts of id lists)."""
    loader = datamodule.train_dataloader()
    ds = loader.dataset
    size = loader.batch_size or 1
    try:
        lengths = [sum(1 for t in ds[i]["input_ids"] if t) for i in range(len(ds))]
    except (TypeError, KeyError, IndexError):
        return next(iter(loader), None)
    order = sorted(range(len(ds)), key=lambda i: (-lengths[i], i))[:size]
    return loader.collate_fn([ds[i] for i in order])


def _float(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


class QualityRunner:
    """Trains and evaluates the runs of a :class:`QualityConfig` (see the module docstring).

    Args:
        config: the recipe.
        printer: where progress lines go (default ``print`` with flush).
    """

    def __init__(self, config: QualityConfig, printer: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.print = printer or (lambda s: print(s, flush=True))
        self.out = Path(config.out).expanduser().resolve()
        if config.trainer.threads is not None:
            torch.set_num_threads(config.trainer.threads)

    # ----------------------------------------------------------------- building blocks
    def datamodule(self, entry: ModelEntry | None = None, seed: int | None = None) -> Any:
        """The recipe's DataModule (with the entry's overrides and the run's seed)."""
        args = {**self.config.data.args, **(entry.data if entry else {})}
        if seed is not None:
            args["seed"] = seed
        return DATAMODULES.create(self.config.data.datamodule, **args)

    @staticmethod
    def needs_training(entry: ModelEntry) -> bool:
        """False for models that learn nothing by gradient descent (one run, not one per seed)."""
        return bool(getattr(MODELS.get(entry.model), "requires_training", True))

    def seeds_of(self, entry: ModelEntry) -> list[int]:
        seeds = list(entry.seeds or self.config.seeds)
        return seeds if self.needs_training(entry) else seeds[:1]

    def key_of(self, entry: ModelEntry, seed: int, dm: Any) -> str:
        c = self.config
        protocol = protocol_of(dm)
        return run_key(
            {
                "revision": RUN_REVISION,
                "mmrec": __version__,
                "dataset": dm.catalog.get("fingerprint") if hasattr(dm, "catalog") else None,
                "data": {"datamodule": c.data.datamodule, **c.data.args, **entry.data},
                "protocol": protocol.as_dict() if protocol is not None else None,
                "entry": dataclasses.asdict(entry),
                "seed": seed,
                "trainer": dataclasses.asdict(c.trainer) | {"threads": None},
                "groups": dataclasses.asdict(c.groups),
            }
        )

    def path_of(self, entry: ModelEntry, seed: int) -> Path:
        return self.out / "runs" / f"{slug(entry.display)}__seed{seed}.json"

    # ----------------------------------------------------------------- one run
    def run_one(self, entry: ModelEntry, seed: int) -> dict[str, Any]:
        """Train (or reuse) and evaluate one entry with one seed; returns the run's JSON payload."""
        c = self.config
        dm = self.datamodule(entry, seed)
        key = self.key_of(entry, seed, dm)
        path = self.path_of(entry, seed)
        if path.is_file() and not c.rerun:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("run_key") == key:
                self.print(f"  {entry.display} seed {seed}: reusing {path.name} (same run key)")
                return old
        quiet_lightning()
        L.seed_everything(seed, verbose=False)
        model = MODELS.create(entry.model, catalog=dm.catalog, **copy.deepcopy(entry.args))
        configure = getattr(model, "configure_item_groups", None)
        if callable(configure):
            configure(c.groups.head_fraction, c.groups.cold_max_count)
        # a model with nothing to train (requires_training False, or no trainable parameter) gets no early
        # stopping, no memory probe and no seconds per epoch
        trains = bool(getattr(model, "requires_training", True)) and any(
            p.requires_grad for p in model.parameters()
        )
        use_cuda = c.trainer.accelerator in ("gpu", "cuda") or (
            c.trainer.accelerator == "auto" and torch.cuda.is_available()
        )
        device = torch.device("cuda" if use_cuda else "cpu")
        memory = None
        if trains and not use_cuda:
            dm.setup("fit")
            probe = _probe_batch(dm)
            loss_fn = getattr(model, "training_loss", None)
            if probe is not None and callable(loss_fn):
                attach = getattr(model, "attach_data", None)  # no trainer yet: attach what the loss needs
                if callable(attach) and hasattr(dm, "model_inputs"):
                    attach(dm.model_inputs())
                memory = training_memory(model, probe, loss_fn)
        best = KeepBest(c.trainer.monitor)
        timer = EpochTimer(device)
        callbacks: list[L.Callback] = [best, timer]
        if trains:
            patience = entry.patience if entry.patience is not None else c.trainer.patience
            callbacks.append(
                L.pytorch.callbacks.EarlyStopping(monitor=c.trainer.monitor, mode="max", patience=patience)
            )
        trainer = L.Trainer(
            accelerator="gpu" if use_cuda else "cpu",
            devices=1,
            max_epochs=entry.max_epochs if entry.max_epochs is not None else c.trainer.max_epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=callbacks,
        )
        if use_cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_seconds = time.perf_counter() - t0
        if use_cuda:
            memory = {"cuda_peak": torch.cuda.max_memory_allocated() / 2**20}
        best.restore(model)
        results = trainer.test(model, datamodule=dm, verbose=False)
        test = {k[len("test/") :]: _float(v) for k, v in (results[0] if results else {}).items()}
        per_user = getattr(model, "test_per_user", None)
        if not per_user:
            raise RuntimeError(
                f"{entry.model} kept no per-user test values (test_per_user); the quality benchmark needs a "
                "RecommenderModule-based model."
            )
        user_ids = list(getattr(dm, "user_ids", []) or [])
        users = per_user["user"].tolist()
        protocol = protocol_of(dm)
        counts = getattr(model, "parameter_counts", None)
        params = counts() if callable(counts) else {"trainable": 0, "total": 0}
        payload: dict[str, Any] = {
            "run_key": key,
            "recipe": c.name,
            "label": entry.display,
            "model": entry.model,
            "entry": dataclasses.asdict(entry),
            "seed": seed,
            "requires_training": trains,
            "protocol": protocol.as_dict() if protocol is not None else None,
            "dataset": dm.catalog.get("dataset"),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "trainable": int(params["trainable"]),
            "total": int(params["total"]),
            "epochs": len(best.history),
            "best_epoch": best.best_epoch + 1,
            "val_history": best.history,
            "val": best.metrics,
            "test": test,
            "seconds_per_epoch": float(np.mean(timer.seconds)) if (trains and timer.seconds) else None,
            "fit_seconds": fit_seconds,
            "memory": memory,
            "per_user": {
                "user_ids": [user_ids[u] if user_ids else str(u) for u in users],
                **{m: [round(float(x), 6) for x in per_user[m].tolist()] for m in PER_USER_METRICS},
            },
        }
        _write_json(path, payload)
        sec = payload["seconds_per_epoch"]
        self.print(
            f"  {entry.display} seed {seed}: test NDCG@10 {test.get('ndcg@10', math.nan):.4f} HR@10 "
            f"{test.get('hr@10', math.nan):.4f} | val NDCG@10 {best.best:.4f} | same-top10 "
            f"{test.get('same_top10_share', math.nan):.3f} | epochs {payload['epochs']} (best "
            f"{payload['best_epoch']})" + (f" | {sec:.2f} s/epoch" if sec else " | no training")
        )
        return payload
