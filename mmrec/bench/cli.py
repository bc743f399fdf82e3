"""``mmrec bench``: benchmarks that print one table.

``mmrec bench crossdomain --config configs/crossdomain/<recipe>.yaml [--set key.path=value ...]
[--seeds 0 1] [--strategies scratch houlsby] [--out DIR] [--cache DIR] [--device cpu] [--rerun]
[--repretrain]``
    pre-trains on the recipe's source domains (cached), transfers to the target with every strategy and
    seed, writes ``results.{csv,md,png}`` and per-run JSON into the recipe's ``out`` folder, and prints the
    Markdown table (see :mod:`mmrec.bench.crossdomain`).

``mmrec bench quality --config configs/bench/<dataset>.yaml [--set key.path=value ...]``
    trains and evaluates the recipe's models x seeds on one dataset, split and protocol beside MostPop, flags
    collapsed models and models not above MostPop, writes ``results.{md,csv,png}``, ``summary.json`` and
    per-run JSON (reused when finished; ``--set rerun=true`` recomputes), prints the table and a final JSON
    line (see :mod:`mmrec.bench.quality`).

Example:
    >>> main(["crossdomain", "--config", "configs/crossdomain/demo.yaml", "--seeds", "0"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmrec.data.canonical import DatasetError
from mmrec.store import StoreError


def _crossdomain_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmrec bench crossdomain",
        description="Cross-domain adapter benchmark: pre-train on source domains (cached), transfer to the "
        "target with every strategy and seed, model selection on validation only; writes results.csv, "
        "results.md, results.png and per-run JSON, and prints the table.",
    )
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/crossdomain/demo.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value (YAML-parsed), repeatable: --set transfer.max_epochs=2 "
        "--set data.sources.0.max_users=500",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="transfer seeds (overrides transfer.seeds)")
    p.add_argument(
        "--strategies", nargs="+", help="run only these strategies (names like houlsby, or table labels)"
    )
    p.add_argument("--out", help="output folder (overrides out)")
    p.add_argument("--cache", help="pre-trained model cache folder (overrides cache)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides device")
    p.add_argument("--threads", type=int, help="torch CPU threads (overrides threads)")
    p.add_argument("--rerun", action="store_true", help="recompute runs whose JSON result already exists")
    p.add_argument(
        "--repretrain",
        action="store_true",
        help="pre-train again even when a cached pre-trained model matches the recipe (overwrites it; "
        "implies --rerun). The cache key covers data, model, pre-training settings and the code's "
        "PRETRAIN_REVISION, not other code edits: use this after changing the model's code.",
    )
    return p


def crossdomain_main(argv: Sequence[str]) -> int:
    """``mmrec bench crossdomain ...``; returns the exit code."""
    from mmrec.bench.crossdomain import RecipeError, load_recipe, run_benchmark

    args = _crossdomain_parser().parse_args(list(argv))
    overrides = list(args.overrides)
    if args.seeds:
        overrides.append(f"transfer.seeds=[{', '.join(str(s) for s in args.seeds)}]")
    for key in ("out", "cache", "device", "threads"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    try:
        recipe = load_recipe(args.config, overrides)
        if args.strategies:
            wanted = set(args.strategies)
            chosen = [
                s
                for s in recipe.transfer.strategies
                if s.display in wanted or s.name in wanted or s.name.split("/", 1)[-1] in wanted
            ]
            if not chosen:
                raise RecipeError(
                    f"--strategies {sorted(wanted)} match none of the recipe's "
                    f"{[s.display for s in recipe.transfer.strategies]}."
                )
            recipe.transfer.strategies = chosen
        summary = run_benchmark(recipe, rerun=args.rerun, repretrain=args.repretrain)
    except (RecipeError, DatasetError, StoreError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print(summary["markdown"])
    print(f"wrote {recipe.out}/results.csv, results.md, results.png and runs/*.json")
    return 0


def quality_main(argv: Sequence[str]) -> int:
    """``mmrec bench quality --config ... [--set key=value ...]``; returns the exit code."""
    from mmrec.bench.quality import QualityConfigError, load_quality_config, run_quality

    p = argparse.ArgumentParser(
        prog="mmrec bench quality",
        description="Models x seeds beside MostPop on one dataset, split and protocol; flags broken models.",
    )
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/bench/demo.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value (YAML-parsed), repeatable: --set seeds=[0] --set rerun=true",
    )
    args = p.parse_args(list(argv))
    try:
        run_quality(load_quality_config(args.config, args.overrides))
    except (QualityConfigError, DatasetError, StoreError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


BENCHMARKS = {
    "crossdomain": (crossdomain_main, "cross-domain adapter transfer benchmark (one table)"),
    "quality": (quality_main, "models x seeds beside MostPop; flags broken models (one table)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmrec bench``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: mmrec bench <benchmark> [options]\n\nbenchmarks:")
        for name, (_, helptext) in BENCHMARKS.items():
            print(f"  {name:<12} {helptext}")
        print("\n`mmrec bench <benchmark> --help` for its options.")
        return 0
    if args[0] not in BENCHMARKS:
        print(f"error: unknown benchmark {args[0]!r}; available: {sorted(BENCHMARKS)}.", file=sys.stderr)
        return 2
    return BENCHMARKS[args[0]][0](args[1:])


if __name__ == "__main__":
    sys.exit(main())
