"""``mmrec data``: prepare canonical datasets from raw files, generate the demo catalogue, inspect datasets.

Usage::

    mmrec data prepare <format> <files...> [--format options] --out DIR [--overwrite] [--skip_bad] [--name N]
    mmrec data synth --out DIR [--seed N] [--num_items N] [--num_users N] [--overwrite]
    mmrec data info DIR [--json]

``mmrec data prepare --help`` lists the formats (registry keys and their aliases); ``mmrec data prepare
<format> --help`` lists the arguments of one format, generated from the converter's signature and docstring
(required arguments are positional, the others ``--options``). Like every command: ``--config FILE``,
``--print_config``.

Example:
    >>> main(["prepare", "movielens/100k", "raw/ml-100k", "--out", "data/ml-100k"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from jsonargparse import ArgumentParser

from mmrec.cli.common import CommandError, UsageError, did_you_mean, interactive, load, shorten
from mmrec.cli.dialect import add_signature, bare_flags, first_doc_line, new_parser, parse

CONVERTERS = "mmrec.datamodules.converters:CONVERTERS"
PREPARE = "mmrec.datamodules.converters:prepare_dataset"
SYNTH = "mmrec.datamodules.synth:generate_demo_catalogue"
READ_META = "mmrec.data.canonical:read_meta"


def _converters() -> Any:
    return load(CONVERTERS)


def _add_output_args(parser: ArgumentParser) -> None:
    parser.add_argument("--out", type=str, required=True, help="dataset folder to create")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing dataset at --out")


def build_parser() -> ArgumentParser:
    """The ``mmrec data`` parser: ``prepare <format>`` (one sub-parser per converter), ``synth``, ``info``."""
    parser = new_parser(
        "mmrec data",
        "Prepare, generate and inspect canonical datasets (items.parquet, interactions.parquet, dataset.json).",
        config=False,
    )
    commands = parser.add_subcommands(required=True, dest="command")

    prepare = new_parser(
        "mmrec data prepare",
        "Convert raw files of a known format into a canonical dataset folder. "
        "`mmrec data prepare <format> --help` lists the arguments of one format.",
        config=False,
    )
    commands.add_subcommand(
        "prepare", prepare, help="convert raw files of a known format into a canonical dataset"
    )
    formats = prepare.add_subcommands(required=True, dest="format")
    registry = _converters()
    for key in registry:
        fn = registry.get(key)
        meta = registry.meta(key)
        aliases = list(meta.get("aliases", ()))
        description = first_doc_line(fn)
        if meta.get("example"):
            description += f" Example: mmrec data prepare {key} {meta['example']} --out data/<name>"
        sub = new_parser(f"mmrec data prepare {key}", description)
        add_signature(sub, fn, skip=("ctx",))
        _add_output_args(sub)
        sub.add_argument(
            "--skip_bad",
            type=bool,
            default=False,
            help="skip malformed lines, unknown-item interactions and duplicates (counted in dataset.json) "
            "instead of stopping at the first one",
        )
        sub.add_argument(
            "--name", type=str | None, default=None, help="dataset name (default: the folder name)"
        )
        bare_flags(sub)
        short = meta.get("description", first_doc_line(fn))
        formats.add_subcommand(
            key, sub, help=short + (f" (aliases: {', '.join(aliases)})" if aliases else "")
        )

    synth = new_parser(
        "mmrec data synth", "Generate the synthetic demo catalogue (items with media, users, interactions)."
    )
    add_signature(synth, load(SYNTH), skip=("show_progress",), positional=False)
    commands.add_subcommand("synth", synth, help="generate the small synthetic demo catalogue")

    info = new_parser("mmrec data info", "Print a dataset's counts, columns, split and conversion report.")
    info.add_argument("path", type=str, help="canonical dataset folder")
    info.add_argument("--json", type=bool, default=False, help="print dataset.json as it is")
    bare_flags(info)
    commands.add_subcommand(
        "info", info, help="print a dataset's counts, columns, split and conversion report"
    )
    return parser


def _normalise_format(argv: list[str]) -> list[str]:
    """``prepare ml-100k ...`` -> ``prepare movielens/100k ...`` (aliases are resolved before parsing).

    Raises:
        UsageError: an unknown format, with the closest keys and aliases.
    """
    if len(argv) >= 2 and argv[0] == "prepare" and not argv[1].startswith("-"):
        aliases = load("mmrec.datamodules.converters:format_aliases")()
        if argv[1] in aliases:
            return [argv[0], aliases[argv[1]], *argv[2:]]
        keys = list(_converters())
        if argv[1] not in keys:
            raise UsageError(
                f"unknown format {shorten(argv[1])!r}.{did_you_mean(argv[1], [*keys, *aliases])} "
                f"Formats: {', '.join(keys)} (`mmrec data prepare --help` lists their aliases)."
            )
    return argv


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def print_summary(meta: dict[str, Any], path: Path, out: TextIO) -> None:
    """Human-readable summary of a dataset's ``dataset.json``."""
    counts = meta.get("counts", {})
    print(f"dataset:      {meta.get('name', path.name)}  ({path})", file=out)
    print(f"source:       {meta.get('source_format', '?')}", file=out)
    print(
        f"counts:       {_fmt(counts.get('users'))} users, {_fmt(counts.get('items'))} items, "
        f"{_fmt(counts.get('interactions'))} interactions",
        file=out,
    )
    cols = meta.get("columns", {})
    print(f"item columns: {', '.join(cols.get('items', []))}", file=out)
    print(f"interaction columns: {', '.join(cols.get('interactions', []))}", file=out)
    split = meta.get("split", "?")
    note = " (x_label / given split)" if split == "given" else " (computed by the DataModule)"
    print(f"split:        {split}{note}", file=out)
    if meta.get("timestamps"):
        print(f"timestamps:   {meta['timestamps']} (no real times in the source)", file=out)
    for name, store in (meta.get("stores") or {}).items():
        print(
            f"store:        {name}: {store.get('dim')}-d, {_fmt(store.get('count'))} rows at {store.get('path')}",
            file=out,
        )
    report = meta.get("conversion_report") or {}
    skipped = report.get("skipped") or {}
    if not skipped:
        print("skipped:      nothing", file=out)
        return
    total = sum(skipped.values())
    print(f"skipped:      {_fmt(total)} record(s) (details in dataset.json 'conversion_report')", file=out)
    for reason, n in sorted(skipped.items()):
        print(f"  {_fmt(n)} {reason}", file=out)
        for ex in (report.get("examples") or {}).get(reason, [])[:3]:
            print(f"      e.g. {ex}", file=out)


def _prepare(key: str, ns: Any) -> int:
    values = {k: v for k, v in ns.as_dict().items() if k != "config"}
    out, overwrite = values.pop("out"), values.pop("overwrite")
    skip_bad, name = values.pop("skip_bad"), values.pop("name")
    ds = load(PREPARE)(key, out, overwrite=overwrite, skip_bad=skip_bad, name=name, **values)
    print(f"wrote {ds.path}")
    print_summary(ds.meta, ds.path, sys.stdout)
    return 0


def _synth(ns: Any) -> int:
    values = {k: v for k, v in ns.as_dict().items() if k != "config"}
    try:
        ds = load(SYNTH)(show_progress=interactive(), **values)
    except ValueError as e:
        if type(e).__name__ == "DatasetError":
            raise
        raise CommandError(str(e)) from None  # an out-of-range seed or size: the message says which
    print(f"wrote {ds.path}")
    print_summary(ds.meta, ds.path, sys.stdout)
    return 0


def _info(ns: Any) -> int:
    root = Path(ns.path).expanduser().resolve()
    meta = load(READ_META)(root)
    if ns.json:
        print(json.dumps(meta, indent=2))
        return 0
    print_summary(meta, root, sys.stdout)
    if meta.get("split") == "given":
        import pyarrow.parquet as pq

        split = pq.read_table(root / "interactions.parquet", columns=["split"]).column("split").to_pylist()
        names = {0: "train", 1: "valid", 2: "test"}
        parts = ", ".join(f"{names.get(k, k)} {_fmt(split.count(k))}" for k in sorted(set(split)))
        print(f"split sizes:  {parts}")
    print(f"fingerprint:  {meta.get('fingerprint', '?')}")
    return 0


def main(argv: list[str]) -> int:
    """Run ``mmrec data`` with the arguments after ``data``; returns the exit status."""
    cfg = parse(build_parser(), _normalise_format(list(argv)))
    if cfg.command == "prepare":
        key = cfg.prepare.format
        return _prepare(key, cfg.prepare[key])
    if cfg.command == "synth":
        return _synth(cfg.synth)
    return _info(cfg.info)
