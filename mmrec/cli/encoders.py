"""``mmrec encoders``: list and describe the registered frozen encoders.

``mmrec encoders`` (= ``mmrec encoders list``) ``[PATTERN] [--tiny] [--modality M]`` prints name, modality,
output dim and default weights from registry metadata, without building any model (``varies`` for the
generic entries, whose dim depends on the weights given).
``mmrec encoders describe NAME [--weights W] [--dtype D] [--no_build] [--json]`` prints the builder's
documentation and, unless ``--no_build``, builds the encoder and prints what a store manifest would record
(weights identity, preprocessing, pooling, fingerprint).

Example:
    >>> main(["list", "text/*"])  # doctest: +ELLIPSIS
    NAME ...
    0
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Literal

from jsonargparse import ArgumentParser

from mmrec.cli.common import CommandError, did_you_mean, listing, load
from mmrec.cli.dialect import bare_flags, new_parser, parse

REGISTRY = "mmrec.encoders:ENCODERS"
LIST = "mmrec.encoders:list_encoders"
CREATE = "mmrec.encoders:create_encoder"


def build_parser() -> ArgumentParser:
    """The ``mmrec encoders`` parser (``list``, ``describe``)."""
    parser = new_parser("mmrec encoders", "List and describe the registered encoders.", config=False)
    commands = parser.add_subcommands(required=True, dest="command")
    ls = new_parser("mmrec encoders list", "List registered encoders (no model is built).")
    # `mmrec encoders list PATTERN` is rewritten to --pattern (an optional positional would not round-trip
    # through --print_config / --config)
    ls.add_argument(
        "--pattern", type=str, default="*", help="shell pattern, e.g. 'open_clip/*' (or the first word)"
    )
    ls.add_argument("--tiny", type=bool, default=False, help="only the tiny test variants")
    ls.add_argument(
        "--modality",
        type=Literal["image", "text", "audio", "video"] | None,
        default=None,
        help="only this modality",
    )
    bare_flags(ls)
    commands.add_subcommand("list", ls, help="list registered encoders (no model is built)")
    ds = new_parser("mmrec encoders describe", "Show one encoder's options and, built, what a store records.")
    ds.add_argument("name", type=str, help="registry key, e.g. text/minilm")
    ds.add_argument(
        "--weights", type=str | None, default=None, help="hub tag / id, file, directory, or 'random'"
    )
    ds.add_argument(
        "--dtype", type=Literal["float32", "float16", "bfloat16"] | None, default=None, help="compute dtype"
    )
    ds.add_argument(
        "--no_build", type=bool, default=False, help="only show the registry entry, build nothing"
    )
    ds.add_argument("--json", type=bool, default=False, help="print the description as JSON")
    bare_flags(ds)
    commands.add_subcommand("describe", ds, help="show one encoder's options and (built) description")
    return parser


def _dim(meta: dict[str, Any]) -> str:
    if "dim" in meta:
        return str(meta["dim"])
    return "varies" if meta.get("generic") else "?"


def list_rows(pattern: str = "*", tiny: bool = False, modality: str | None = None) -> list[tuple[str, ...]]:
    """``(name, modality, dim, default weights, flags)`` per registered encoder matching the filters."""
    registry = load(REGISTRY)
    names = load(LIST)(pattern, tiny=True) if tiny else load(LIST)(pattern)
    rows: list[tuple[str, ...]] = []
    for name in names:
        meta = registry.meta(name)
        if modality and meta.get("modality") != modality:
            continue
        flags = ",".join(f for f in ("tiny", "generic") if meta.get(f))
        rows.append(
            (name, str(meta.get("modality", "?")), _dim(meta), str(meta.get("default_weights", "-")), flags)
        )
    return rows


def _list(pattern: str, tiny: bool, modality: str | None) -> int:
    rows = list_rows(pattern, tiny, modality)
    if not rows:
        raise CommandError(
            f"no registered encoder matches {pattern!r}"
            + (" with --tiny" if tiny else "")
            + did_you_mean(pattern, load(LIST)())
            + " (`mmrec encoders` lists them all)"
        )
    header = ("NAME", "MODALITY", "DIM", "DEFAULT WEIGHTS", "FLAGS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _describe(name: str, weights: str | None, dtype: str | None, build: bool, as_json: bool) -> int:
    registry = load(REGISTRY)
    names = load(LIST)()
    if name in registry:
        key = name
    else:
        family = name.partition("/")[0]
        if f"{family}/model" not in registry:
            raise CommandError(
                f"unknown encoder {name!r}.{did_you_mean(name, names)} Registered: {listing(names, 20)} "
                "(`mmrec encoders` lists them all)."
            )
        key = f"{family}/model"  # family/<any hub name> goes through the family's generic builder
    builder = registry.get(key)
    info: dict[str, Any] = {
        "key": key,
        "meta": {k: v for k, v in registry.meta(key).items() if not callable(v)},
        "signature": f"{name}{inspect.signature(builder)}",
        "doc": inspect.getdoc(builder) or "",
    }
    if build:
        kwargs = {k: v for k, v in (("weights", weights), ("dtype", dtype)) if v is not None}
        enc = load(CREATE)(name, **kwargs)
        info["encoder"] = {
            **enc.describe(),
            "fingerprint": enc.fingerprint(),
            "parameters": sum(p.numel() for p in enc.parameters()),
        }
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    meta = info["meta"]
    print(f"{name}  (modality: {meta.get('modality', '?')}, dim: {_dim(meta)})")
    if meta.get("architecture"):
        print(f"  architecture: {meta['architecture']}")
    print(f"  {info['signature']}")
    for line in str(info["doc"]).splitlines():
        print(f"  {line}")
    if "encoder" in info:
        print("built:")
        for k, v in info["encoder"].items():
            print(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``mmrec encoders`` (bare: ``list``). Returns the exit status."""
    args = list(argv)
    if not args or (args[0] not in ("list", "describe") and args[0] not in ("-h", "--help")):
        args = ["list", *args]  # `mmrec encoders`, `mmrec encoders 'text/*'`, `mmrec encoders --tiny`
    if args[0] == "list" and len(args) > 1 and not args[1].startswith("-"):
        args = ["list", "--pattern", *args[1:]]
    cfg = parse(build_parser(), args)
    if cfg.command == "list":
        return _list(cfg.list.pattern, cfg.list.tiny, cfg.list.modality)
    d = cfg.describe
    return _describe(d.name, d.weights, d.dtype, not d.no_build, d.json)
