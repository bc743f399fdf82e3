"""A fitted model's test metrics beside MostPop's on the same split and protocol; the last line is JSON.

The end of ``make demo``: after ``mmrec fit`` wrote a run folder, this rebuilds the model (best-on-validation
checkpoint) and its datamodule, tests the model and a MostPop built on the same training split with the same
evaluator, and prints both columns, their ratio, whether the rankings are user-dependent, and as its last line
``{"model": ..., "test": {...}, "mostpop": {...}, "same_top10_share": ..., "protocol": {...}}``
(:mod:`mmrec.bench.quality.beside`).

Usage:
    python bench/beside_mostpop.py --run runs/sasrec_demo            # latest version, best checkpoint
    python bench/beside_mostpop.py --ckpt runs/sasrec_demo/version_0/checkpoints/epoch=5-step=60.ckpt
    python bench/beside_mostpop.py --run runs/sasrec_demo --dataset /moved/demo   # the data moved
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder of `mmrec fit` (runs/<name>): its latest best checkpoint")
    src.add_argument("--ckpt", help="a checkpoint written by `mmrec fit`")
    p.add_argument("--dataset", help="dataset folder, when it moved since training")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not sys.stderr.isatty():  # a log file gets no weight-loading bar (as `mmrec` commands)
        from mmrec.cli.common import hide_progress_bars

        hide_progress_bars()
    from mmrec.bench.quality.beside import beside_mostpop_from_checkpoint, best_checkpoint, print_beside

    try:
        ckpt = best_checkpoint(args.run) if args.run else args.ckpt
        result = beside_mostpop_from_checkpoint(ckpt, {"dataset": args.dataset} if args.dataset else None)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_beside(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
