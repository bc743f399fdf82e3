"""Cross-domain adapter benchmark: pre-train on source domains once, transfer with every strategy, one table.

``mmrec bench crossdomain --config configs/crossdomain/<recipe>.yaml`` runs :func:`run_benchmark`:

1. **Data**: a :class:`~mmrec.datamodules.multidomain.MultiDomainDataModule` over the recipe's source domains
   and target domain (shared content features; the stores of every domain must come from one encoder).
2. **Pre-training** (cached): a :class:`~mmrec.models.transferable.TransferableRecommender` trained on the
   union of the sources with in-domain softmax, best epoch chosen on the sources' validation NDCG@10. The
   weights go to ``<cache>/pretrain-<fingerprint>/pretrained.pt``; the fingerprint hashes the source dataset
   fingerprints, store fingerprints, domain filters, model config, pre-training config, seed and
   :data:`PRETRAIN_REVISION`, so a second run with the same inputs reuses the file (and says so);
   ``--repretrain`` trains it again regardless.
3. **Transfer**: for every strategy of the recipe and every seed, a fresh copy of the pre-trained model is
   built for the target catalogue, the target's features are attached, the strategy is applied with
   :func:`mmrec.adapters.apply_strategy` (``transfer/scratch`` re-initialises everything), and the model
   trains on the target with early stopping on **validation** NDCG@10; the test set is evaluated once, with
   the weights of the best validation epoch. Each run writes ``runs/<label>__seed<k>.json`` (metrics,
   per-user test NDCG@10 / HR@10, exact trainable parameter names, memory, time); an identical run (same
   key) found there is reused unless ``--rerun``.
   Two rows need no training (one run, no seed): ``zero-shot`` (the pre-trained model on the target) and
   ``content-knn`` (the zoo's ``knn/content``, :class:`~mmrec.models.knn.ContentKNN`: the parameter-free
   content baseline, cosine between the user's history and each item in the frozen feature space, the bar
   any content-based transfer must clear).
4. **Report**: ``results.csv``, ``results.md`` and ``results.png`` in the recipe's ``out`` folder (see
   :mod:`mmrec.bench.report`); the Markdown table is printed at the end.

Significance: for every strategy, each test user's NDCG@10 is averaged over the seeds, and a two-sided
Wilcoxon signed-rank test over users compares it with ``transfer/scratch`` (the same users; zero differences
dropped); p-values are also given Holm-adjusted over the strategies compared.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the training run; on CPU,
:func:`mmrec.bench.memory.training_memory` on a fixed probe batch (the ``batch_size`` longest training
sequences): parameters + buffers + gradients + AdamW states + tensors saved for backward.

Example:
    >>> recipe = load_recipe("configs/crossdomain/demo.yaml", ["transfer.seeds=[0]"])  # doctest: +SKIP
    >>> summary = run_benchmark(recipe)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from mmrec import __version__
from mmrec.adapters import apply_strategy, trainable_report
from mmrec.bench.crossdomain_recipe import (  # noqa: F401  (the recipe API, re-exported here)
    CONTENT_KNN,
    CONTENT_KNN_HISTORY,
    MONITOR,
    NO_TRAINING,
    PRETRAIN_REVISION,
    ZERO_SHOT,
    DataSpec,
    ModelSpec,
    PretrainSpec,
    Recipe,
    RecipeError,
    StrategySpec,
    TransferSpec,
    apply_override,
    load_recipe,
)
from mmrec.bench.fitting import (  # noqa: F401  (the training helpers, re-exported here)
    BestState,
    EpochPrinter,
    EpochTimer,
    FitResult,
    evaluate_per_user,
    fit_with_selection,
    probe_batch,
    resolve_device,
)
from mmrec.bench.memory import training_memory
from mmrec.bench.report import summarise, write_reports
from mmrec.datamodules.multidomain import MultiDomainDataModule
from mmrec.models.knn import ContentKNN
from mmrec.models.transferable import TransferableRecommender

log = logging.getLogger(__name__)


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- runner
@dataclass
class RunRecord:
    """One (strategy, seed) result, as written to ``runs/<label>__seed<k>.json``."""

    label: str
    strategy: str
    seed: int
    payload: dict[str, Any]


class CrossDomainBenchmark:
    """Runs a :class:`Recipe` (see the module docstring).

    Args:
        recipe: the recipe.
        rerun: ignore per-run JSON results already on disk.
        repretrain: pre-train again even when the cached model's fingerprint matches (overwrites it).
        printer: where progress lines go (default ``print`` with flush).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        rerun: bool = False,
        repretrain: bool = False,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.rerun = rerun
        self.repretrain = repretrain
        self.print = printer or (lambda s: print(s, flush=True))
        if recipe.threads is not None:
            torch.set_num_threads(recipe.threads)
        self.device = resolve_device(recipe.device)
        self.out = Path(recipe.out).expanduser().resolve()
        self.cache = Path(recipe.cache).expanduser().resolve()
        d = recipe.data
        self.dm = MultiDomainDataModule(
            sources=d.sources,
            target=d.target,
            stores=d.stores,
            max_len=d.max_len,
            batch_size=d.batch_size,
            eval_batch_size=d.eval_batch_size,
            few_shot=d.few_shot,
            few_shot_seed=d.few_shot_seed,
            num_workers=d.num_workers,
        )
        self.pre = self.dm.with_phase("pretrain", seed=recipe.pretrain.seed)
        self.tgt = self.dm.with_phase("target")
        self.pretrain_info: dict[str, Any] = {}

    # ----------------------------------------------------------------- pre-training
    def model_kwargs(self) -> dict[str, Any]:
        m = self.recipe.model
        return {
            "dim": m.dim,
            "num_layers": m.num_layers,
            "num_heads": m.num_heads,
            "dropout": m.dropout,
            "fusion": m.fusion,
            "id_embedding": m.id_embedding,
            "in_domain_softmax": m.in_domain_softmax,
            "score": m.score,
            "temperature": m.temperature,
            "center_features": m.center_features,
            "input_scale": m.input_scale,
            "item_dropout": m.item_dropout,
        }

    def pretrain_fingerprint(self) -> str:
        """Hash of everything the pre-trained weights depend on."""
        p = self.recipe.pretrain
        return _hash(
            {
                "data": self.pre.fingerprint(),
                "batch_size": self.recipe.data.batch_size,
                "model": self.model_kwargs(),
                "pretrain": dataclasses.asdict(p),
                "mmrec": __version__,
                "revision": PRETRAIN_REVISION,
            }
        )

    def pretrained(self) -> dict[str, Any]:
        """The pre-trained ``{"config", "state_dict", "extra"}``: from the cache, or trained now and cached."""
        fp = self.pretrain_fingerprint()
        folder = self.cache / f"pretrain-{fp}"
        path = folder / "pretrained.pt"
        if path.is_file() and not self.repretrain:
            blob = TransferableRecommender.load_pretrained_file(path)
            self.pretrain_info = {**blob.get("extra", {}), "path": str(path), "cached": True}
            self.print(f"pre-trained model: cache hit {path} (reused; delete the folder to pre-train again)")
            return blob
        p = self.recipe.pretrain
        self.print(f"pre-training on {[s.name for s in self.dm.source_specs]} -> {path}")
        L.seed_everything(p.seed, verbose=False)
        cat = self.pre.catalog
        model = TransferableRecommender(
            catalog=cat, lr=p.lr, weight_decay=p.weight_decay, **self.model_kwargs()
        )
        model.attach_item_features(self.pre.item_feature_tables())
        t0 = time.perf_counter()
        fit = fit_with_selection(
            model,
            self.pre,
            max_epochs=p.max_epochs,
            patience=p.patience,
            device=self.device,
            extra_callbacks=[EpochPrinter("  pretrain", self.print)],
        )
        extra = {
            "fingerprint": fp,
            "sources": self.pre.describe(),
            "best_epoch": fit.best_epoch,
            "epochs": fit.epochs,
            "val_ndcg@10": fit.best_val,
            "seconds": time.perf_counter() - t0,
            "seconds_per_epoch": fit.seconds_per_epoch,
            "parameters": trainable_report(model)["total"],
        }
        model.save_pretrained(path, extra=extra)
        _write_json(
            folder / "pretrained.json", {**extra, "config": model.model_config(), "recipe": self.recipe.name}
        )
        self.pretrain_info = {**extra, "path": str(path), "cached": False}
        self.print(
            f"pre-trained: best epoch {fit.best_epoch}/{fit.epochs}, source val NDCG@10 {fit.best_val:.4f}, "
            f"{extra['seconds']:.0f} s -> {path}"
        )
        return TransferableRecommender.load_pretrained_file(path)

    # ----------------------------------------------------------------- transfer runs
    def run_key(self, spec: StrategySpec, seed: int, pretrain_fp: str) -> str:
        t = self.recipe.transfer
        return _hash(
            {
                "pretrain": pretrain_fp,
                "target": self.tgt.fingerprint(),
                "strategy": dataclasses.asdict(spec),
                "seed": seed,
                "train": [t.max_epochs, t.patience, t.lr, t.weight_decay, self.recipe.data.batch_size],
                "device": self.device.type,
            }
        )

    def target_model(self, blob: Mapping[str, Any], lr: float) -> TransferableRecommender:
        """A fresh copy of the pre-trained model for the target catalogue, features attached."""
        model = TransferableRecommender.from_pretrained(
            blob, self.tgt.catalog, lr=lr, weight_decay=self.recipe.transfer.weight_decay
        )
        model.attach_item_features(self._target_tables())
        return model

    def _target_tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not hasattr(self, "_tables"):
            self._tables = self.tgt.item_feature_tables()
        return self._tables

    def _user_ids(self, users: np.ndarray) -> list[str]:
        ids = self.tgt.phase_data().user_ids
        return [ids[int(u)] for u in users]

    def run_one(self, spec: StrategySpec, seed: int, blob: Mapping[str, Any], pretrain_fp: str) -> RunRecord:
        """One strategy with one seed (or reuse its JSON)."""
        label = spec.display
        path = self.out / "runs" / f"{_slug(label)}__seed{seed}.json"
        key = self.run_key(spec, seed, pretrain_fp)
        if path.is_file() and not (self.rerun or self.repretrain):
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("run_key") == key:
                self.print(f"  {label} seed {seed}: reusing {path.name} (same run key)")
                return RunRecord(label, spec.name, seed, old)
        t = self.recipe.transfer
        lr = spec.lr if spec.lr is not None else t.lr
        L.seed_everything(seed, verbose=False)
        model = self.target_model(blob, lr)
        payload: dict[str, Any] = {
            "run_key": key,
            "recipe": self.recipe.name,
            "label": label,
            "strategy": spec.name,
            "spec": dataclasses.asdict(spec),
            "seed": seed,
            "lr": lr,
            "device": str(self.device),
            "pretrain_fingerprint": pretrain_fp,
        }
        scorer: TransferableRecommender | ContentKNN = model
        if spec.name in NO_TRAINING:
            if spec.name == CONTENT_KNN:
                scorer = ContentKNN(catalog=self.tgt.catalog, **spec.options)  # the zoo's `knn/content`
                scorer.attach_item_features(self._target_tables())
            for p in model.parameters():
                p.requires_grad_(False)
            payload.update(
                trainable=0,
                total=trainable_report(model)["total"] if spec.name == ZERO_SHOT else 0,
                trainable_names=[],
                where=[],
                memory=None,
                seconds_per_epoch=None,
                epochs=0,
                best_epoch=0,
            )
            val = evaluate_per_user(scorer, self.tgt.val_dataloader(), self.device)
            payload["val_ndcg@10"] = float(np.mean(val["ndcg@10"]))
        else:
            applied = apply_strategy(
                model, spec.name, where=spec.where, tune_layer_norm=spec.tune_layer_norm, **spec.options
            )
            if model.item_ids is not None:  # target ID table is new: it trains under every strategy
                model.item_ids.weight.requires_grad_(True)
            report = trainable_report(model)
            model.to(self.device)
            tdm = self.tgt.with_phase("target", seed=seed)
            probe = {k: v.to(self.device) for k, v in probe_batch(tdm).items()}
            memory = training_memory(model, probe, model.training_loss)
            L.seed_everything(seed, verbose=False)
            fit = fit_with_selection(
                model, tdm, max_epochs=t.max_epochs, patience=t.patience, device=self.device
            )
            if fit.cuda_peak_mib is not None:
                memory["cuda_peak"] = fit.cuda_peak_mib
            payload.update(
                trainable=int(report["trainable"]),
                total=int(report["total"]),
                trainable_names=list(report["names"]),
                strategy_trainable_names=list(applied.trainable),
                where=list(applied.where),
                memory=memory,
                seconds_per_epoch=fit.seconds_per_epoch,
                epochs=fit.epochs,
                best_epoch=fit.best_epoch,
                val_history=fit.history,
            )
            payload["val_ndcg@10"] = fit.best_val
        test = evaluate_per_user(scorer, self.tgt.test_dataloader(), self.device)
        payload["test"] = {k: float(np.mean(v)) for k, v in test.items() if k != "user"}
        payload["per_user"] = {
            "user_ids": self._user_ids(test["user"]),
            "ndcg@10": [round(float(x), 6) for x in test["ndcg@10"]],
            "hr@10": [int(x) for x in test["hr@10"]],
        }
        _write_json(path, payload)
        mem = payload.get("memory") or {}
        self.print(
            f"  {label} seed {seed}: test HR@10 {payload['test']['hr@10']:.4f} NDCG@10 "
            f"{payload['test']['ndcg@10']:.4f} | val NDCG@10 {payload['val_ndcg@10']:.4f} | "
            f"trainable {payload['trainable']:,} | epochs {payload['epochs']} (best {payload['best_epoch']}) | "
            + (f"{payload['seconds_per_epoch']:.2f} s/epoch | " if payload.get("seconds_per_epoch") else "")
            + (f"{mem.get('total', float('nan')):.1f} MiB" if mem else "no training")
        )
        return RunRecord(label, spec.name, seed, payload)

    # ----------------------------------------------------------------- all
    def run(self) -> dict[str, Any]:
        """Pre-train (or reuse), run every strategy and seed, write and return the report."""
        t0 = time.perf_counter()
        r = self.recipe
        self.print(f"crossdomain benchmark {r.name!r} on {self.device} -> {self.out}")
        for phase, dm in (("source", self.pre), ("target", self.tgt)):
            for row in dm.describe():
                self.print(
                    f"  {phase} {row['domain']} ({row['dataset']}): {row['items']:,} items, {row['users']:,} users, "
                    f"{row['interactions']:,} interactions, {row['evaluated_users']:,} evaluated, "
                    f"{row['training_users']:,} training users"
                )
        blob = self.pretrained()
        fp = self.pretrain_fingerprint()
        records: list[RunRecord] = []
        plan = [  # zero-shot and content-knn have no training, hence no seed: one run
            (spec, seed)
            for spec in r.transfer.strategies
            for seed in (r.transfer.seeds[:1] if spec.name in NO_TRAINING else r.transfer.seeds)
        ]
        for n, (spec, seed) in enumerate(plan, start=1):
            self.print(f"[{n}/{len(plan)}] {spec.display} seed {seed}")
            records.append(self.run_one(spec, seed, blob, fp))
        summary = summarise(
            records,
            baseline=r.transfer.baseline,
            meta={
                "recipe": r.name,
                "recipe_path": r.path,
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "memory_kind": "cuda_peak" if self.device.type == "cuda" else "cpu_estimate",
                "seeds": list(r.transfer.seeds),
                "few_shot": r.data.few_shot,
                "sources": self.pre.describe(),
                "target": self.tgt.describe(),
                "pretrain": {k: v for k, v in self.pretrain_info.items() if k != "sources"},
                "model": self.model_kwargs(),
                "transfer": {k: v for k, v in dataclasses.asdict(r.transfer).items() if k != "strategies"},
                "seconds": time.perf_counter() - t0,
            },
        )
        write_reports(summary, self.out)
        return summary


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)


def run_benchmark(
    recipe: Recipe,
    *,
    rerun: bool = False,
    repretrain: bool = False,
    printer: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a recipe end to end (see the module docstring).

    Args:
        recipe: from :func:`load_recipe`.
        rerun: recompute runs whose JSON already exists.
        repretrain: pre-train again even if a cached model matches (implies ``rerun``).
        printer: progress sink (default: ``print``).

    Returns:
        the summary (``rows``, ``meta``, ``markdown``) that :mod:`mmrec.bench.report` wrote out.
    """
    return CrossDomainBenchmark(recipe, rerun=rerun, repretrain=repretrain, printer=printer).run()
