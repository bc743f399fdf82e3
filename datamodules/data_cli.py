"""``mmrec data``: prepare canonical datasets from raw files, generate the demo catalogue, inspect datasets.

Usage::

    mmrec data prepare <format> [format args] --out DIR [--overwrite] [--skip-bad] [--name NAME]
    mmrec data synth --out DIR [--seed N] [--num-items N] [--num-users N] [--overwrite]
    mmrec data info DIR [--json]

``mmrec data prepare --help`` lists the formats; ``mmrec data prepare <format> --help`` lists the
arguments of one format (generated from the converter's signature and docstring). Errors in the input
print ``error: <message>`` on stderr and exit with status 2, without a traceback.

Example:
    >>> from mmrec.datamodules.data_cli import main
    >>> main(["prepare", "movielens/100k", "raw/ml-100k", "--out", "data/ml-100k"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from mmrec.data.canonical import DatasetError, read_meta
from mmrec.datamodules.converters import CONVERTERS, prepare_dataset
from mmrec.store import StoreError

_ARGS_SECTION = re.compile(r"^Args:\s*$")
_ARG_LINE = re.compile(r"^(\s+)(\w+):\s*(.*)$")


def _arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    """``name -> help`` from the ``Args:`` section of a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    out: dict[str, str] = {}
    in_args = False
    indent: int | None = None
    current: str | None = None
    for line in doc.splitlines():
        if _ARGS_SECTION.match(line):
            in_args = True
            continue
        if not in_args:
            continue
        if line.strip() and not line.startswith(" "):
            break  # next section (Returns:, Example:...)
        m = _ARG_LINE.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            current = m.group(2)
            out[current] = m.group(3).strip()
        elif current is not None and line.strip():
            out[current] += " " + line.strip()
    return {k: v.replace("``", "") for k, v in out.items()}


def _first_doc_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0].replace("``", "") if doc else ""


def _add_converter_args(parser: argparse.ArgumentParser, fn: Callable[..., Any]) -> None:
    """Arguments from the converter's signature: required ones positional, the others ``--options``."""
    hints = typing.get_type_hints(fn)
    docs = _arg_docs(fn)
    params = list(inspect.signature(fn).parameters.values())[1:]  # drop ctx
    for p in params:
        hint = hints.get(p.name, str)
        help_text = docs.get(p.name, "").replace("%", "%%")
        kwargs: dict[str, Any] = {"help": help_text}
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = list(args)
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hint in (int, float):
            kwargs["type"] = hint
        elif float in args or int in args:
            kwargs["type"] = next(t for t in (int, float) if t in args)
        if p.default is inspect.Parameter.empty:
            kwargs["metavar"] = p.name.upper()
            parser.add_argument(p.name, **kwargs)
        else:
            if p.default is not None and "action" not in kwargs:
                kwargs["help"] += " (default: %(default)r)"
            kwargs.setdefault(
                "metavar", None if "choices" in kwargs or "action" in kwargs else p.name.upper()
            )
            if kwargs["metavar"] is None:
                del kwargs["metavar"]
            parser.add_argument("--" + p.name.replace("_", "-"), dest=p.name, default=p.default, **kwargs)


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def build_parser() -> argparse.ArgumentParser:
    """The ``mmrec data`` argument parser (one sub-parser per registered converter).

    Returns:
        The parser; ``mmrec data prepare --help`` lists every format with a one-line description.

    Example:
        >>> ns = build_parser().parse_args(["prepare", "ml-100k", "raw/ml-100k", "--out", "data/ml"])
        >>> ns.format_key, ns.root
        ('movielens/100k', 'raw/ml-100k')
    """
    parser = argparse.ArgumentParser(
        prog="mmrec data",
        description="Prepare, generate and inspect canonical datasets (items.parquet, interactions.parquet, dataset.json).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="convert raw files of a known format into a canonical dataset",
        description="Convert raw files of a known format into a canonical dataset folder. "
        "Run `mmrec data prepare <format> --help` for the arguments of one format.",
    )
    formats = prepare.add_subparsers(dest="format", metavar="FORMAT", required=True, title="formats")
    for key in CONVERTERS:
        fn = CONVERTERS.get(key)
        meta = CONVERTERS.meta(key)
        aliases = list(meta.get("aliases", ()))
        description = _first_doc_line(fn)
        if meta.get("example"):
            description += f"\n\nexample:\n  mmrec data prepare {key} {meta['example']} --out data/<name>"
        sub = formats.add_parser(
            key,
            aliases=aliases,
            help=meta.get("description", description),
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_converter_args(sub, fn)
        _add_output_args(sub)
        sub.add_argument(
            "--skip-bad",
            action="store_true",
            help="skip malformed lines, unknown-item interactions and duplicates (counted in dataset.json) "
            "instead of stopping at the first one",
        )
        sub.add_argument("--name", help="dataset name recorded in dataset.json (default: the folder name)")
        sub.set_defaults(format_key=key)

    synth = commands.add_parser(
        "synth",
        help="generate the small synthetic demo catalogue",
        description="Generate the demo catalogue (synthetic items with media, users and interactions).",
    )
    _add_output_args(synth)
    synth.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same files (default: 0)"
    )
    synth.add_argument("--num-items", type=int, help="number of items (default: the generator's)")
    synth.add_argument("--num-users", type=int, help="number of users (default: the generator's)")

    info = commands.add_parser("info", help="print a dataset's counts, columns, split and conversion report")
    info.add_argument("path", type=Path, metavar="DIR", help="canonical dataset folder")
    info.add_argument("--json", action="store_true", help="print dataset.json as it is")
    return parser


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _print_summary(meta: dict[str, Any], path: Path, out: TextIO) -> None:
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
    else:
        total = sum(skipped.values())
        print(
            f"skipped:      {_fmt(total)} record(s) (details in dataset.json 'conversion_report')", file=out
        )
        for reason, n in sorted(skipped.items()):
            print(f"  {_fmt(n)} {reason}", file=out)
            for ex in (report.get("examples") or {}).get(reason, [])[:3]:
                print(f"      e.g. {ex}", file=out)


def _cmd_prepare(ns: argparse.Namespace, fn_params: Sequence[str]) -> int:
    format_args = {name: getattr(ns, name) for name in fn_params}
    ds = prepare_dataset(
        ns.format_key,
        ns.out,
        overwrite=ns.overwrite,
        skip_bad=ns.skip_bad,
        name=ns.name,
        **format_args,
    )
    print(f"wrote {ds.path}")
    _print_summary(ds.meta, ds.path, sys.stdout)
    return 0


def _cmd_synth(ns: argparse.Namespace) -> int:
    try:
        from mmrec.datamodules.synth import generate_demo_catalogue
    except ModuleNotFoundError as e:
        if e.name != "mmrec.datamodules.synth":
            raise
        raise DatasetError(
            "this mmrec build has no demo catalogue generator (mmrec.datamodules.synth is missing); "
            "reinstall mmrec or prepare a real dataset with `mmrec data prepare`."
        ) from None
    sizes = {k: v for k, v in (("num_items", ns.num_items), ("num_users", ns.num_users)) if v is not None}
    try:
        ds = generate_demo_catalogue(ns.out, seed=ns.seed, overwrite=ns.overwrite, **sizes)
    except ValueError as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(str(e)) from None  # an out-of-range seed or size: the message says which
    print(f"wrote {ds.path}")
    _print_summary(ds.meta, ds.path, sys.stdout)
    return 0


def _cmd_info(ns: argparse.Namespace) -> int:
    root = Path(ns.path).expanduser().resolve()
    meta = read_meta(root)
    if ns.json:
        print(json.dumps(meta, indent=2))
        return 0
    _print_summary(meta, root, sys.stdout)
    if meta.get("split") == "given":
        import pyarrow.parquet as pq

        split = pq.read_table(root / "interactions.parquet", columns=["split"]).column("split").to_pylist()
        names = {0: "train", 1: "valid", 2: "test"}
        parts = ", ".join(f"{names.get(k, k)} {_fmt(split.count(k))}" for k in sorted(set(split)))
        print(f"split sizes:  {parts}")
    print(f"fingerprint:  {meta.get('fingerprint', '?')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``mmrec data`` with ``argv`` (the arguments after ``data``).

    Args:
        argv: e.g. ``["prepare", "amazon/2014", "reviews.json.gz", "--out", "data/x"]``; defaults to
            ``sys.argv[2:]``.

    Returns:
        The exit status: 0 on success, 2 on a usage or data error (message on stderr, no traceback).

    Example:
        >>> main(["info", "data/ml-100k"])  # doctest: +SKIP
        0
    """
    argv = sys.argv[2:] if argv is None else list(argv)
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        if ns.command == "prepare":
            params = list(inspect.signature(CONVERTERS.get(ns.format_key)).parameters)[1:]
            return _cmd_prepare(ns, params)
        if ns.command == "synth":
            return _cmd_synth(ns)
        return _cmd_info(ns)
    except (DatasetError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        raise
    except OSError as e:  # unreadable input or unwritable output: the message names the path
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
