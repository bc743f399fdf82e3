"""SASRec vs the multimodal sequential model on Amazon Beauty: full ranking, leave-one-out, several seeds.

Runs ``mmrec fit --config configs/{sasrec,multimodal}_beauty.yaml`` once per seed through the real CLI
(same split, same evaluation), collects the test metrics of the best-on-validation checkpoint and the
training time, and prints mean ± std per model. Needs ``data/beauty`` and ``cache/beauty/text``
(see the configs' headers for the two preparation commands).

Usage:
    python bench/sequential_beauty.py --seeds 0 1 2 [--max-epochs 40] [--models sasrec multimodal] [--threads 1]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"sasrec": "configs/sasrec_beauty.yaml", "multimodal": "configs/multimodal_beauty.yaml"}


def run_one(
    model: str, seed: int, max_epochs: int, out_root: Path, threads: int | None = None
) -> dict[str, float]:
    """Train and test one model with one seed; returns its test metrics and timings."""
    name = f"{model}_seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "mmrec.cli",
        "fit",
        "--config",
        CONFIGS[model],
        "--seed_everything",
        str(seed),
        "--trainer.max_epochs",
        str(max_epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(out_root),
        "--trainer.logger.init_args.name",
        name,
    ]
    start = time.perf_counter()
    env = dict(os.environ)
    if threads:  # torch reads these at start-up: one process per core on a shared machine
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    run_dir = sorted((out_root / name).glob("version_*"))[-1]
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    epochs = _epochs_trained(run_dir / "metrics.csv")
    return {
        **metrics,
        "wall_seconds": seconds,
        "epochs": epochs,
        "seconds_per_epoch": seconds / max(1, epochs),
    }


def _epochs_trained(csv_path: Path) -> int:
    import csv

    with open(csv_path) as f:
        epochs = {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/ndcg@10")}
    return len(epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per training process")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_sequential_beauty")
    args = p.parse_args()

    results: dict[str, list[dict[str, float]]] = {}
    for model in args.models:
        for seed in args.seeds:
            r = run_one(model, seed, args.max_epochs, args.out, args.threads)
            print(
                f"{model} seed {seed}: HR@10 {r['hr@10']:.4f} NDCG@10 {r['ndcg@10']:.4f} "
                f"({r['epochs']} epochs, {r['wall_seconds']:.0f} s)",
                flush=True,
            )
            results.setdefault(model, []).append(r)

    summary: dict[str, dict[str, float]] = {}
    print(f"\n{'model':<12} {'HR@10':>16} {'NDCG@10':>16} {'s/epoch':>9} {'epochs':>7}")
    for model, runs in results.items():
        row: dict[str, float] = {}
        for key in (
            "hr@10",
            "ndcg@10",
            "hr@5",
            "ndcg@5",
            "mrr",
            "seconds_per_epoch",
            "wall_seconds",
            "epochs",
        ):
            vals = [r[key] for r in runs]
            row[f"{key}_mean"] = statistics.fmean(vals)
            row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary[model] = row
        print(
            f"{model:<12} {row['hr@10_mean']:.4f} ± {row['hr@10_std']:.4f} {row['ndcg@10_mean']:.4f} ± "
            f"{row['ndcg@10_std']:.4f} {row['seconds_per_epoch_mean']:>9.1f} {row['epochs_mean']:>7.1f}"
        )
    print(
        json.dumps({"seeds": args.seeds, "max_epochs": args.max_epochs, **{m: s for m, s in summary.items()}})
    )


if __name__ == "__main__":
    main()
