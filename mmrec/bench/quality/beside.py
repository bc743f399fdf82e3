"""A fitted model's test metrics beside MostPop's on the same split and protocol (the end of ``make demo``).

:func:`beside_mostpop` tests a model and a MostPop built on the same datamodule with the same Lightning
``Trainer.test`` and evaluator, and returns (and :func:`print_beside` prints) both, their ratio, the
protocol and the model's ``same_top10_share``; :func:`beside_mostpop_from_checkpoint` rebuilds model and
datamodule from a checkpoint written by ``mmrec fit``; :func:`best_checkpoint` finds the one of a run folder.
``bench/beside_mostpop.py`` is the command-line wrapper.

Example:
    >>> out = beside_mostpop_from_checkpoint(best_checkpoint("runs/sasrec_demo"))  # doctest: +SKIP
    >>> print_beside(out)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch

from mmrec.bench.fitting import quiet_lightning
from mmrec.eval_protocol import protocol_of
from mmrec.models.base import RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.protocols import CatalogSource, ModelInputSource
from mmrec.retrieval.recommender import load_checkpoint_meta, resolve_class

#: the metrics shown side by side (and carried by the JSON line)
SHOWN = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "coverage@10", "same_top10_share")


def _test(model: L.LightningModule, datamodule: Any) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    return {k.removeprefix("test/"): float(v) for k, v in (results[0] if results else {}).items()}


def beside_mostpop(model: L.LightningModule, datamodule: Any, label: str | None = None) -> dict[str, Any]:
    """Test ``model`` and MostPop on ``datamodule`` (same split, protocol, users and evaluator).

    Args:
        model: a fitted model (weights loaded).
        datamodule: the datamodule it was trained with; must provide ``model_inputs()["train_interactions"]``
            (MostPop's training popularity).
        label: the model's name in the output (default: its registry key or class name).

    Returns:
        ``{"model", "protocol", "test": {...}, "mostpop": {...}, "ratio_ndcg@10", "same_top10_share"}``.

    Raises:
        ValueError: the datamodule cannot give MostPop its training interactions.
    """
    if not isinstance(datamodule, ModelInputSource) or "train_interactions" not in datamodule.model_inputs():
        raise ValueError(
            f"{type(datamodule).__name__} does not provide model_inputs()['train_interactions'], so MostPop "
            "cannot be built on the same split; add it to the datamodule (see SequentialDataModule)."
        )
    quiet_lightning()
    eval_ks = tuple(getattr(model, "eval_ks", (5, 10, 20)))
    mostpop = MODELS.create(
        "baseline/mostpop", catalog=cast(CatalogSource, datamodule).catalog, eval_ks=eval_ks
    )
    test = _test(model, datamodule)
    pop = _test(mostpop, datamodule)
    protocol = protocol_of(datamodule)
    name = label or MODELS.key_of(type(model)) or type(model).__name__
    ratio = test.get("ndcg@10", math.nan) / pop["ndcg@10"] if pop.get("ndcg@10") else math.nan
    return {
        "model": name,
        "protocol": protocol.as_dict() if protocol is not None else None,
        "num_users": int(test.get("num_users", 0)),
        "test": {k: round(test[k], 6) for k in SHOWN if k in test},
        "mostpop": {k: round(pop[k], 6) for k in SHOWN if k in pop},
        "ratio_ndcg@10": round(ratio, 4),
        "same_top10_share": round(test.get("same_top10_share", math.nan), 6),
    }


def beside_mostpop_from_checkpoint(
    ckpt_path: str | os.PathLike[str], data_overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """:func:`beside_mostpop` for a checkpoint written by ``mmrec fit`` (model and datamodule rebuilt from the
    classes and arguments it records; ``data_overrides`` replaces datamodule arguments, e.g. a moved
    ``dataset``)."""
    path = Path(ckpt_path).expanduser().resolve()
    ckpt = load_checkpoint_meta(path)
    hp, dhp = dict(ckpt["hyper_parameters"]), dict(ckpt["datamodule_hyper_parameters"])
    del ckpt
    model_cls = resolve_class(hp["_class_path"], RecommenderModule)
    dm_cls = resolve_class(dhp["_class_path"], L.LightningDataModule)
    dm_args = {k: v for k, v in dhp.items() if not k.startswith("_")} | dict(data_overrides or {})
    datamodule = dm_cls(**dm_args)
    model = model_cls.load_from_checkpoint(path, map_location=torch.device("cpu"), weights_only=True)
    return beside_mostpop(model, datamodule) | {"checkpoint": str(path)}


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """The best-on-validation checkpoint of the latest ``version_*`` of a run folder (``runs/<name>``), i.e.
    the ``epoch=*.ckpt`` that ``ModelCheckpoint`` kept (``last.ckpt`` is not a selection)."""
    root = Path(run_dir).expanduser()
    versions = sorted(
        root.glob("version_*"), key=lambda p: int(p.name.split("_")[-1]) if p.name[8:].isdigit() else -1
    )
    for version in reversed(versions):
        ckpts = sorted((version / "checkpoints").glob("epoch=*.ckpt"), key=lambda p: p.stat().st_mtime)
        if ckpts:
            return ckpts[-1]
    raise FileNotFoundError(
        f"no epoch=*.ckpt under {root}/version_*/checkpoints; run `mmrec fit --config ...` with a ModelCheckpoint "
        "callback first."
    )


def print_beside(result: Mapping[str, Any]) -> None:
    """Print the two columns, their ratio, the protocol, then the JSON line (last)."""
    protocol = result.get("protocol") or {}
    print(
        f"[mmrec] test metrics of {result['model']} beside MostPop, same split and protocol "
        f"({protocol.get('name', 'not declared')}: split {protocol.get('split')}, "
        f"history {'masked' if protocol.get('mask_history') else 'not masked'}), {result.get('num_users', 0):,} users:"
    )
    w = max(10, len(result["model"]))
    print(f"  {'metric':<18} {result['model']:>{w}} {'MostPop':>10} {'ratio':>7}")
    for k, v in result["test"].items():
        p = result["mostpop"].get(k, math.nan)
        ratio = f"{v / p:7.2f}" if p else "      -"
        print(f"  {k:<18} {v:{w}.4f} {p:10.4f} {ratio}")
    verdict = "user-dependent" if result["same_top10_share"] < 0.10 else "COLLAPSED (one list for many users)"
    print(f"  rankings: {verdict}; same_top10_share {result['same_top10_share']:.3f}")
    print(
        json.dumps({k: result[k] for k in ("model", "test", "mostpop", "same_top10_share", "protocol")}),
        flush=True,
    )
