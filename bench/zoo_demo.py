"""Baseline zoo beside MostPop: fit each config with ``mmrec fit``, then score MostPop on the same split.

For every config given (default: ``configs/baselines/*_demo.yaml`` and ``configs/sasrec_demo.yaml``) the
script runs ``mmrec fit --config <cfg>`` in a subprocess (one thread), reads the best validation epoch from
the CSV log and the test metrics of the best checkpoint, reloads that checkpoint to measure the share of
test users who get the most common top-10 list (history masked as in the metrics, and unmasked), and
computes MostPop (training-split popularity) through the same evaluator on the same split. Prints a table
and, as the last line, ``{"dataset": ..., "protocol": ..., "results": {"<model>": {...}}}``.

Example:
    OMP_NUM_THREADS=1 .venv/bin/python bench/zoo_demo.py --out runs/zoo_demo
    OMP_NUM_THREADS=1 .venv/bin/python bench/zoo_demo.py configs/baselines/bpr_demo.yaml --set model.init_args.lr=0.01
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

try:
    from common import emit_json
except ImportError:  # python -m bench.zoo_demo
    from bench.common import emit_json

from mmrec.metrics import FullRankingEvaluator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs/baselines").glob("*_demo.yaml")),
    "configs/sasrec_demo.yaml",
]


def _cls(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def run_fit(cfg: str, out: Path, overrides: Sequence[str]) -> Path:
    """``mmrec fit --config cfg`` into ``out/<stem>``; returns the run folder."""
    name = Path(cfg).stem
    run_dir = out / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    args = [
        str(Path(sys.executable).parent / "mmrec"),
        "fit",
        "--config",
        cfg,
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.logger.init_args.name",
        name,
        "--trainer.logger.init_args.version",
        "0",
        "--trainer.enable_progress_bar",
        "false",
    ]
    for o in overrides:
        key, value = o.split("=", 1)
        args += [f"--{key}", value]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = out / f"{name}.log"
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise RuntimeError(f"{cfg} failed (exit {proc.returncode}); see {log}")
    return run_dir / "version_0"


def best_validation(run: Path) -> dict[str, float]:
    """Best ``val/ndcg@10`` epoch of the CSV log, with its ``val/hr@10``."""
    with open(run / "metrics.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/ndcg@10")]
    best = max(rows, key=lambda r: float(r["val/ndcg@10"]))
    return {
        "val_ndcg@10": float(best["val/ndcg@10"]),
        "val_hr@10": float(best["val/hr@10"]),
        "best_epoch": int(best["epoch"]),
        "epochs": 1 + max(int(r["epoch"]) for r in rows),
    }


def top10_share(scores_batches: list[tuple[torch.Tensor, Any]]) -> tuple[float, float]:
    """Share of users whose top-10 is the most common one, (masked, unmasked)."""
    out = []
    for masked in (True, False):
        lists: Counter[tuple[int, ...]] = Counter()
        n = 0
        for scores, batch in scores_batches:
            s = scores.clone()
            if masked and batch["exclude_rows"].numel():
                s[batch["exclude_rows"], batch["exclude_cols"]] = float("-inf")
            lists.update(tuple(r) for r in s.topk(10, dim=1).indices.tolist())
            n += s.shape[0]
        out.append(lists.most_common(1)[0][1] / n)
    return out[0], out[1]


def evaluate_checkpoint(run: Path, config: Mapping[str, Any]) -> dict[str, float]:
    """Reload the best checkpoint and score the test split (top-10 sharing)."""
    # models without training never advance global_step, so ModelCheckpoint keeps only last.ckpt
    ckpts = sorted(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt") or [
        run / "checkpoints" / "last.ckpt"
    ]
    dm = _cls(config["data"]["class_path"])(**config["data"]["init_args"])
    dm.setup("test")
    model_cls = _cls(config["model"]["class_path"])
    model = model_cls.load_from_checkpoint(ckpts[0], map_location="cpu", catalog=dm.catalog)
    model.attach_data(dm.model_inputs())
    model.eval()
    batches = []
    with torch.no_grad():
        model._cached_items = None
        items = model._eval_items()
        for batch in dm.test_dataloader():
            batches.append((model.score_all(batch, items), batch))
    masked, unmasked = top10_share(batches)
    return {"same_top10_share": masked, "same_top10_share_unmasked": unmasked}


def mostpop(config: Mapping[str, Any]) -> dict[str, float]:
    """Training-split popularity through the full-ranking evaluator, on the validation and test splits."""
    dm = _cls(config["data"]["class_path"])(**config["data"]["init_args"])
    dm.setup("fit")
    counts = torch.from_numpy(np.asarray(dm.model_inputs()["train_interactions"].sum(axis=0)).ravel()).float()
    counts[0] = float("-inf")
    res: dict[str, float] = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        ev = FullRankingEvaluator(ks=(10,))
        batches = []
        for batch in loader:
            scores = counts.expand(batch["input_ids"].shape[0], -1).clone()
            ev.update(scores, batch["targets"], exclude=(batch["exclude_rows"], batch["exclude_cols"]))
            batches.append((scores, batch))
        m = ev.compute()
        res[f"{split}_ndcg@10"], res[f"{split}_hr@10"] = m["ndcg@10"], m["hr@10"]
        if split == "test":
            res["same_top10_share"], res["same_top10_share_unmasked"] = top10_share(batches)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", default=DEFAULT)
    p.add_argument("--out", default="runs/zoo_demo", help="folder for the runs (relative to the repo root)")
    p.add_argument(
        "--set", action="append", default=[], help="override for every config, e.g. trainer.max_epochs=5"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    first = yaml.safe_load((ROOT / args.configs[0]).read_text(encoding="utf-8"))
    os.chdir(ROOT)
    results["mostpop"] = mostpop(first)
    for cfg in args.configs:
        t0 = time.perf_counter()
        run = run_fit(cfg, out, args.set)
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        test = json.loads((run / "test_metrics.json").read_text(encoding="utf-8"))
        row = best_validation(run)
        row.update({"test_ndcg@10": test["ndcg@10"], "test_hr@10": test["hr@10"]})
        row.update(evaluate_checkpoint(run, config))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results[Path(cfg).stem] = row
        print(f"{Path(cfg).stem}: {json.dumps(row)}", flush=True)
    pop = results["mostpop"]
    print(
        "\n| model | val NDCG@10 | val HR@10 | test NDCG@10 | test HR@10 | x MostPop (test NDCG) | same top-10 (masked / unmasked) | epochs (best) | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = r["test_ndcg@10"] / pop["test_ndcg@10"]
        ep = f"{r['epochs']} ({r['best_epoch'] + 1})" if "epochs" in r else "-"
        print(
            f"| {name} | {r['val_ndcg@10']:.4f} | {r['val_hr@10']:.4f} | {r['test_ndcg@10']:.4f} | "
            f"{r['test_hr@10']:.4f} | {ratio:.2f} | {r['same_top10_share']:.1%} / {r['same_top10_share_unmasked']:.1%} | "
            f"{ep} | {r.get('seconds', '-')} |"
        )
    protocol = (
        "leave-one-out, full ranking, history masked"
        if first["data"]["init_args"].get("mask_history", True)
        else "leave-one-out, full ranking, history not masked"
    )
    emit_json({"dataset": first["data"]["init_args"]["dataset"], "protocol": protocol, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
