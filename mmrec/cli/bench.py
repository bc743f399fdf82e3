"""``mmrec bench <benchmark>``: benchmarks that read one recipe and print one table.

``mmrec bench crossdomain --config configs/crossdomain/<recipe>.yaml [--transfer.seeds=[0]]
[--transfer.max_epochs=3] [--strategies [scratch, houlsby]] [--rerun] [--repretrain] [--threads N]``
    pre-trains on the recipe's source domains (cached), transfers to the target with every strategy and
    seed, writes ``results.{csv,md,png}`` and per-run JSON into the recipe's ``out`` folder, and prints the
    Markdown table (:mod:`mmrec.bench.crossdomain`; the recipe is
    :class:`mmrec.bench.crossdomain_recipe.Recipe`).

Adding a benchmark is one entry in :data:`BENCHMARKS`: a :class:`Benchmark` naming

- ``config``: a dataclass (``"module:Class"``) whose fields are the recipe's keys (nested dataclasses give
  dotted keys); the command reads it with jsonargparse, so ``--config``, ``--print_config`` and ``--a.b=v``
  work with no further code. If the class has a ``from_dict`` classmethod, the parsed mapping goes through
  it (its checks and messages), else the dataclass is built from the parsed values;
- ``run``: ``"module:function"`` called as ``run(config)`` (plus the keyword options below); whatever it
  returns is printed when it is a string, as its ``"markdown"`` entry when a mapping holds one, else as a
  JSON line;
- optionally ``options``: ``"module:function"`` whose typed keyword parameters become extra options that
  are not recipe keys (passed to ``run`` as keywords).

``--threads N`` is added to every benchmark whose config has no ``threads`` key (the rule of
:func:`mmrec.cli.common.choose_threads` applies either way). For example, the quality benchmark::

    BENCHMARKS["quality"] = Benchmark(
        config="mmrec.bench.quality:QualityConfig",
        run="mmrec.cli.bench:run_quality",
        help="models x seeds on one dataset: mean +- std, significance, coverage, tail / cold items",
    )
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from mmrec.cli.common import UsageError, apply_threads, did_you_mean, load
from mmrec.cli.dialect import add_signature, bare_flags, new_parser, parse


@dataclass(frozen=True)
class Benchmark:
    """One ``mmrec bench <name>`` subcommand (see the module docstring)."""

    config: str
    run: str
    help: str
    options: str | None = None
    #: config fields read with another type than their annotation: ``{"transfer.strategies": type}``
    field_types: tuple[tuple[str, Any], ...] = ()


def crossdomain_options(
    strategies: list[str] | None = None, rerun: bool = False, repretrain: bool = False
) -> None:
    """Run options of ``mmrec bench crossdomain`` (not recipe keys).

    Args:
        strategies: run only these strategies (names such as houlsby or bottleneck/houlsby, or table labels).
        rerun: recompute runs whose JSON result already exists.
        repretrain: pre-train again even when a cached pre-trained model matches the recipe (overwrites it;
            implies rerun). The cache key covers data, model, pre-training settings and the code's
            PRETRAIN_REVISION, not other code edits: use this after changing the model's code.
    """


def run_crossdomain(
    recipe: Any, *, strategies: list[str] | None = None, rerun: bool = False, repretrain: bool = False
) -> str:
    """Run the cross-domain benchmark on a checked recipe; returns the Markdown table and where files went."""
    if strategies:
        wanted = set(strategies)
        chosen = [
            s
            for s in recipe.transfer.strategies
            if s.display in wanted or s.name in wanted or s.name.split("/", 1)[-1] in wanted
        ]
        if not chosen:
            labels = [s.display for s in recipe.transfer.strategies]
            raise UsageError(
                f"--strategies {sorted(wanted)} match none of the recipe's {labels}."
                + did_you_mean(sorted(wanted)[0], labels)
            )
        recipe.transfer.strategies = chosen
    summary = load("mmrec.bench.crossdomain:run_benchmark")(recipe, rerun=rerun, repretrain=repretrain)
    return f"\n{summary['markdown']}\nwrote {recipe.out}/results.csv, results.md, results.png and runs/*.json"


def run_quality(config: Any) -> None:
    """Run the quality harness; it prints its table and final JSON line itself (the JSON stays last)."""
    load("mmrec.bench.quality:run_quality")(config)


#: name -> benchmark; `mmrec bench <name>`
BENCHMARKS: dict[str, Benchmark] = {
    "crossdomain": Benchmark(
        config="mmrec.bench.crossdomain_recipe:Recipe",
        run="mmrec.cli.bench:run_crossdomain",
        help="cross-domain adapter transfer benchmark (one table)",
        options="mmrec.cli.bench:crossdomain_options",
        # entries are a registry key or {name, label, where, tune_layer_norm, options, lr}: Recipe checks them
        field_types=(("transfer.strategies", list[str | dict[str, Any]]),),
    ),
    "quality": Benchmark(
        config="mmrec.bench.quality:QualityConfig",
        run="mmrec.cli.bench:run_quality",
        help="models x seeds beside MostPop on one split and protocol; flags broken models (one table)",
        # entries are {model, label, args, ...}: QualityConfig.from_dict checks them
        field_types=(("models", list[str | dict[str, Any]]),),
    ),
}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def add_config_arguments(
    parser: ArgumentParser, cls: type, field_types: Mapping[str, Any], prefix: str = ""
) -> None:
    """Options from the fields of dataclass ``cls`` (nested dataclasses give dotted keys), except that the
    fields named in ``field_types`` (``"transfer.strategies"``) are read with the type given there."""
    hints = typing.get_type_hints(cls)
    direct = {k for k in field_types if "." not in k}
    nested = {k.split(".", 1)[0] for k in field_types if "." in k}
    parser.add_class_arguments(
        cls, prefix.rstrip(".") or None, as_group=False, skip={"path", *direct, *nested}
    )
    for key in sorted(direct):
        parser.add_argument(f"--{prefix}{key}", type=field_types[key], default=[])
    for key in sorted(nested):
        sub = {k.split(".", 1)[1]: t for k, t in field_types.items() if k.startswith(key + ".")}
        add_config_arguments(parser, hints[key], sub, f"{prefix}{key}.")


def build_parser(name: str, bench: Benchmark) -> tuple[ArgumentParser, list[str]]:
    """The parser of ``mmrec bench <name>`` and the names of its run options."""
    cls = load(bench.config)
    p = new_parser(f"mmrec bench {name}", bench.help + ". The options are the recipe's keys.")
    add_config_arguments(p, cls, dict(bench.field_types))
    options: list[str] = []
    if bench.options:
        options = add_signature(p, load(bench.options), positional=False)
    if "threads" not in _field_names(cls):
        p.add_argument(
            "--threads", type=int | None, default=None, help="CPU threads (default: the load rule)"
        )
        options.append("threads")
    return bare_flags(p), options


def build_config(cls: type, parser: ArgumentParser, cfg: Namespace, values: dict[str, Any]) -> Any:
    """The benchmark's config object from the parsed values (through ``cls.from_dict`` when it has one)."""
    from_dict = getattr(cls, "from_dict", None)
    if callable(from_dict):
        return from_dict(values)
    init = parser.instantiate(cfg)
    return cls(**{f: init[f] for f in _field_names(cls) if f in init})


def _print_result(result: Any) -> None:
    if result is None:
        return
    if isinstance(result, str):
        print(result)
    elif isinstance(result, Mapping) and isinstance(result.get("markdown"), str):
        print(result["markdown"])
    else:
        print(json.dumps(result, default=str))


def usage() -> str:
    """The help of ``mmrec bench``."""
    lines = ["usage: mmrec bench <benchmark> [options]", "", "benchmarks:"]
    lines += [f"  {name:<12} {b.help}" for name, b in BENCHMARKS.items()]
    lines += ["", "`mmrec bench <benchmark> --help` for its options (the keys of its recipe)."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of ``mmrec bench``; returns the exit status."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = args[0]
    if name not in BENCHMARKS:
        raise UsageError(
            f"unknown benchmark {name!r}.{did_you_mean(name, BENCHMARKS)} Benchmarks: {', '.join(BENCHMARKS)}."
        )
    bench = BENCHMARKS[name]
    parser, option_names = build_parser(name, bench)
    cfg = parse(parser, args[1:])
    values = cfg.as_dict()
    values.pop("config", None)
    options = {k: values.pop(k) for k in option_names}
    threads = options.pop("threads", None) if "threads" in option_names else values.get("threads")
    config = build_config(load(bench.config), parser, cfg, values)
    chosen = apply_threads(threads)
    if hasattr(config, "threads") and chosen is not None:
        config.threads = chosen
    result = load(bench.run)(config, **options)
    _print_result(result)
    sys.stdout.flush()
    return 0
