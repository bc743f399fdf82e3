"""SASRec on MovieLens-100k under RecBole's protocol: the training fixes of issue 10, one cause at a time.

Runs ``mmrec fit --config configs/sasrec_ml100k.yaml`` (leave-one-out by time, full ranking, history NOT
masked, as RecBole and the published sequential numbers) through the real CLI, once per variant and seed,
and prints the validation NDCG@10 curve, the best epoch and the test metrics of the best-on-validation
checkpoint beside MostPop (training-set popularity) on the same split. Variants (CLI overrides of the recipe):

- ``fixed``: the recipe as shipped;
- ``legacy``: the behaviour before the fix (``N(0, 1)`` positions, last ``max_len + 1`` items per user only,
  length-sorted batch pools);
- ``legacy-positions``, ``last-window``, ``length-pools``: the recipe with one of those three put back.

Needs ``data/ml100k``:  ``mmrec data prepare movielens ../shared/data/ml-100k --out data/ml100k``.

Usage:
    python bench/sequential_ml100k.py --seeds 0 1 2 --threads 1 [--variants fixed legacy] [--max-epochs 60]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/sasrec_ml100k.yaml"
LEGACY_POSITIONS = ["--model.init_args.position_std", "1.0"]
LAST_WINDOW = ["--data.init_args.train_examples", "last"]
LENGTH_POOLS = ["--data.init_args.pool_batches", "50"]
VARIANTS: dict[str, list[str]] = {
    "fixed": [],
    "legacy": LEGACY_POSITIONS + LAST_WINDOW + LENGTH_POOLS,
    "legacy-positions": LEGACY_POSITIONS,
    "last-window": LAST_WINDOW,
    "length-pools": LENGTH_POOLS,
}
CURVE_EPOCHS = (1, 3, 5, 10, 20)

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from common import emit_json, print_table
except ImportError:  # python -m bench.sequential_ml100k
    from bench.common import emit_json, print_table


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    """Train and test one variant with one seed through ``mmrec fit``; returns curve, test metrics, timing."""
    name = f"{variant}_seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "mmrec.cli",
        "fit",
        "--config",
        CONFIG,
        "--seed_everything",
        str(seed),
        "--data.init_args.dataset",
        str(args.dataset),
        "--trainer.max_epochs",
        str(args.max_epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(args.out),
        "--trainer.logger.init_args.name",
        name,
        *VARIANTS[variant],
    ]
    env = dict(os.environ)
    if args.threads:  # torch reads these at start-up: one process per core on a shared machine
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    run_dir = sorted((args.out / name).glob("version_*"))[-1]
    test = json.loads((run_dir / "test_metrics.json").read_text())
    curve = _val_curve(run_dir / "metrics.csv")
    best = max(range(len(curve)), key=curve.__getitem__)
    return {
        "variant": variant,
        "seed": seed,
        "val_ndcg@10": curve,
        "best_epoch": best + 1,
        "test": test,
        "epochs": len(curve),
        "seconds_per_epoch": seconds / max(1, len(curve)),
    }


def _val_curve(csv_path: Path) -> list[float]:
    """Validation NDCG@10 per epoch (epoch 1 first) from Lightning's CSV log."""
    by_epoch: dict[int, float] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            if row.get("val/ndcg@10"):
                by_epoch[int(float(row["epoch"]))] = float(row["val/ndcg@10"])
    return [by_epoch[e] for e in sorted(by_epoch)]


def mostpop(dataset: Path) -> dict[str, dict[str, float]]:
    """MostPop (training-set counts, history not masked) on the recipe's split: validation and test."""
    import torch

    from mmrec.datamodules.sequential import SequentialDataModule
    from mmrec.metrics import FullRankingEvaluator

    dm = SequentialDataModule(str(dataset), mask_history=False)
    dm.setup("fit")
    assert dm.splits is not None
    counts = torch.zeros(dm.catalog["num_items"] + 1)
    for seq in dm.splits.train:
        counts.index_add_(0, torch.tensor(seq, dtype=torch.long), torch.ones(len(seq)))
    counts[0] = float("-inf")
    out = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        ev = FullRankingEvaluator(ks=(10,))
        for b in loader:
            ev.update(counts.expand(len(b["user"]), -1).clone(), b["targets"])
        res = ev.compute()
        out[split] = {"ndcg@10": float(res["ndcg@10"]), "hr@10": float(res["hr@10"])}
    return out


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["fixed", "legacy"], choices=list(VARIANTS))
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training process")
    p.add_argument("--dataset", type=Path, default=REPO / "data" / "ml100k")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_sequential_ml100k")
    args = p.parse_args()
    if not (args.dataset / "dataset.json").is_file():
        raise SystemExit(
            f"{args.dataset} is not a prepared dataset: run "
            "`mmrec data prepare movielens ../shared/data/ml-100k --out data/ml100k` first."
        )

    pop = mostpop(args.dataset)
    runs: list[dict[str, object]] = []
    for variant in args.variants:
        for seed in args.seeds:
            r = run_one(variant, seed, args)
            t = r["test"]
            assert isinstance(t, dict)
            print(
                f"{variant} seed {seed}: test HR@10 {t['hr@10']:.4f} NDCG@10 {t['ndcg@10']:.4f} "
                f"(best epoch {r['best_epoch']} of {r['epochs']}, {r['seconds_per_epoch']:.1f} s/epoch)",
                flush=True,
            )
            runs.append(r)

    rows: list[dict[str, object]] = []
    summary: dict[str, dict[str, object]] = {}
    for variant in args.variants:
        mine = [r for r in runs if r["variant"] == variant]
        curves = [r["val_ndcg@10"] for r in mine]
        row: dict[str, object] = {"variant": variant}
        for e in CURVE_EPOCHS:
            vals = [c[e - 1] for c in curves if isinstance(c, list) and len(c) >= e]
            row[f"val@ep{e}"] = f"{statistics.fmean(vals):.4f}" if vals else "-"
        tests = [r["test"] for r in mine]
        row["best ep"] = f"{statistics.fmean(float(r['best_epoch']) for r in mine):.0f}"  # type: ignore[arg-type]
        row["test HR@10"] = _mean_std([float(t["hr@10"]) for t in tests])  # type: ignore[index]
        row["test NDCG@10"] = _mean_std([float(t["ndcg@10"]) for t in tests])  # type: ignore[index]
        row["s/epoch"] = f"{statistics.fmean(float(r['seconds_per_epoch']) for r in mine):.1f}"  # type: ignore[arg-type]
        rows.append(row)
        summary[variant] = {
            "test_ndcg@10": statistics.fmean(float(t["ndcg@10"]) for t in tests),  # type: ignore[index]
            "test_hr@10": statistics.fmean(float(t["hr@10"]) for t in tests),  # type: ignore[index]
            "best_epoch": statistics.fmean(float(r["best_epoch"]) for r in mine),  # type: ignore[arg-type]
            "val_curves": curves,
        }
    rows.append(
        {
            "variant": "MostPop",
            **{f"val@ep{e}": f"{pop['val']['ndcg@10']:.4f}" for e in CURVE_EPOCHS},
            "best ep": "-",
            "test HR@10": f"{pop['test']['hr@10']:.4f}",
            "test NDCG@10": f"{pop['test']['ndcg@10']:.4f}",
            "s/epoch": "-",
        }
    )
    print("\nMovieLens-100k, leave-one-out, full ranking, history not masked (RecBole protocol)")
    print_table(rows)
    emit_json(
        {
            "dataset": "ml100k",
            "protocol": "leave-one-out, full ranking, unmasked",
            "seeds": args.seeds,
            "mostpop": pop,
            "results": summary,
        }
    )


if __name__ == "__main__":
    main()
