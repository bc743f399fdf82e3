"""Scaling curves: SASRec-64 train step and evaluation against the catalogue size, full vs sampled softmax.

Synthetic, seeded: for each catalogue size (``--items``, default 10k, 100k, 1M) a SASRec (dim 64, 2 layers,
2 heads, ``max_len`` 20) is trained for a few steps on random batches of ``--batch`` sequences (targets at every
position, Zipf-popular items), with each loss in ``--losses``:

* ``ce``: full softmax over the catalogue (logits ``positions x items``);
* ``sampled``: sampled softmax, ``--negatives`` popularity negatives shared per batch, logQ-corrected
  (``mmrec.nn.losses``).

Each (items, loss) runs in its own process so that its **peak RSS** is its own; a full softmax whose logits
alone would pass ``--max-logits-gb`` is not run (reported as skipped with the estimate). Then evaluation:
full-ranking users/s (query forward + scores over the catalogue + ``FullRankingEvaluator.update``) on
``--eval-users`` synthetic users, batches sized so the score matrix stays under 512 MiB.

Usage:
    OMP_NUM_THREADS=1 python bench/scaling.py --threads 1
    python bench/scaling.py --items 10000 100000 --steps 3          # quick

Writes ``runs/scaling.png`` (not committed). The last line of output is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from mmrec.metrics import FullRankingEvaluator
from mmrec.models import SASRec

try:  # run as `python bench/scaling.py` (bench/ on sys.path) ...
    from common import emit_json, print_table
except ImportError:  # ... or as `python -m bench.scaling` from the repository root
    from bench.common import emit_json, print_table

MAX_LEN = 20


def zipf_items(n: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Item indices ``1..n`` with Zipf(1) popularity (inverse-CDF sampling, no ``(n,)`` multinomial)."""
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    # P(rank <= r) ~ log(r) / log(n): rank = n ** u
    return (n ** u).long().clamp(1, n)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(items: int, loss: str, args: argparse.Namespace) -> dict[str, float]:
    """Train steps + evaluation of one (catalogue, loss) in this process."""
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    cat = {"num_items": items, "num_users": args.eval_users, "max_len": MAX_LEN}
    model = SASRec(catalog=cat, dim=64, num_layers=2, num_heads=2, dropout=0.2, loss=loss,
                   num_negatives=args.negatives, negative_sampling="popularity")
    if loss == "sampled":
        pop = 1.0 / torch.arange(1, items + 1, dtype=torch.float64)
        model.next_item_loss.attach_popularity(torch.cat([torch.zeros(1, dtype=torch.float64), pop * 1e6]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    base_rss = peak_rss_mb()
    times = []
    model.train()
    for step in range(args.steps + 1):
        seq = zipf_items(items, (args.batch, MAX_LEN + 1), g)
        batch = {"input_ids": seq[:, :-1], "target_ids": seq[:, 1:], "user": torch.arange(args.batch)}
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.training_loss(batch).backward()
        opt.step()
        if step:  # the first step allocates optimizer state
            times.append(time.perf_counter() - start)
    train_peak = peak_rss_mb()
    model.eval()
    ev = FullRankingEvaluator(ks=(10,), ignore_columns=(0,))
    eval_batch = max(16, min(1024, (512 * 2**20) // (4 * (items + 1))))
    done = 0
    with torch.inference_mode():
        item_vecs = model.item_vectors()
        start = time.perf_counter()
        while done < args.eval_users:
            b = min(eval_batch, args.eval_users - done)
            seq = zipf_items(items, (b, MAX_LEN + 1), g)
            scores = model.query_vectors({"input_ids": seq[:, :-1]}) @ item_vecs.T
            scores[:, 0] = float("-inf")
            ev.update(scores, seq[:, -1:])
            done += b
        eval_s = time.perf_counter() - start
    return {
        "items": items,
        "loss": loss,
        "step_s": sum(times) / len(times),
        "train_peak_mb": train_peak,
        "model_mb": base_rss,
        "eval_users_per_s": done / eval_s,
        "eval_batch": eval_batch,
        "peak_rss_mb": peak_rss_mb(),
    }


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for loss in sorted({str(r["loss"]) for r in rows}):
        rs = [r for r in rows if r["loss"] == loss and "step_s" in r]
        xs = [r["items"] for r in rs]
        axes[0].plot(xs, [r["step_s"] for r in rs], "o-", label=loss)
        axes[1].plot(xs, [r["train_peak_mb"] for r in rs], "o-", label=loss)
        if loss == "sampled":
            axes[2].plot(xs, [r["eval_users_per_s"] for r in rs], "o-", label="full ranking")
    titles = ("train step (s)", "peak RSS while training (MiB)", "evaluation users/s")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--losses", nargs="+", default=["ce", "sampled"], choices=["ce", "sampled", "inbatch"])
    p.add_argument("--batch", type=int, default=64, help="sequences per train step (x max_len 20 positions)")
    p.add_argument("--negatives", type=int, default=1024)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--eval-users", type=int, default=2048)
    p.add_argument("--max-logits-gb", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="runs/scaling.png")
    p.add_argument("--one", nargs=2, metavar=("ITEMS", "LOSS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args)))
        return
    rows: list[dict[str, object]] = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    passthrough = [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in
                   ("batch", "negatives", "steps", "eval-users", "threads", "seed")]
    for items in args.items:
        for loss in args.losses:
            logits_gb = args.batch * MAX_LEN * (items + 1) * 4 / 2**30
            if loss == "ce" and 3 * logits_gb > args.max_logits_gb:  # logits, softmax, gradient
                rows.append({"items": items, "loss": loss, "skipped": f"logits {logits_gb:.1f} GiB x3"})
                continue
            done = subprocess.run([sys.executable, __file__, "--one", str(items), loss, *passthrough],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                rows.append({"items": items, "loss": loss, "skipped": done.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print_table(rows, ["items", "loss", "step_s", "train_peak_mb", "eval_users_per_s", "skipped"])
    plot(rows, Path(args.plot))
    print(f"plot: {args.plot}")
    emit_json({"bench": "scaling", "threads": args.threads, "batch": args.batch, "max_len": MAX_LEN,
               "negatives": args.negatives, "rows": rows})


if __name__ == "__main__":
    main()
