"""RecBole atomic files: ``<name>.inter`` and optional ``<name>.item``.

Tab-separated, with a typed header such as ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>
timestamp:float``. Types: ``token``, ``token_seq`` (space-separated tokens), ``float``, ``float_seq``.
Common field names are mapped to canonical columns (``title``/``movie_title`` -> ``title``,
``genre``/``categories``/``class`` -> ``categories``, ``brand``, ``price``, ``description``, ``review``);
``release_year`` and every other field are kept as extra columns (``float`` as numbers, the rest as
text). Without a ``timestamp`` field the row's position in the file is used and recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.converters import CONVERTERS
from mmrec.datamodules.converters.common import (
    ConvertContext,
    Converted,
    ItemsPolicy,
    Malformed,
    clean_text,
    parse_float,
    require_file,
    restrict_items,
    sorted_ids,
)

_TYPES = ("token", "token_seq", "float", "float_seq")
_ITEM_ALIASES: dict[str, tuple[str, ...]] = {
    "title": ("title", "movie_title", "item_name", "name"),
    "categories": ("categories", "genre", "genres", "class", "category"),
    "brand": ("brand",),
    "price": ("price",),
    "description": ("description", "desc"),
}
_INTER_ALIASES: dict[str, tuple[str, ...]] = {
    "rating": ("rating",),
    "timestamp": ("timestamp",),
    "review": ("review", "review_text"),
}


def typed_header(ctx: ConvertContext, path: Path) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` of a RecBole typed header (``user_id:token<TAB>item_id_list:token_seq...``).

    Raises:
        DatasetError: a field that is not ``name:type`` with a RecBole type, or a repeated name.
    """
    fields: list[tuple[str, str]] = []
    for raw in ctx.header(path):
        name, sep, typ = raw.rpartition(":")
        if not sep or not name or typ not in _TYPES:
            raise DatasetError(
                f"{path}:1: header field {raw!r} is not 'name:type' with type one of {', '.join(_TYPES)}; "
                "RecBole atomic files start with e.g. 'user_id:token<TAB>item_id:token<TAB>rating:float'."
            )
        fields.append((name, typ))
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}:1: the header repeats a field name: {names}.")
    return fields


def _rows(
    ctx: ConvertContext, path: Path, fields: list[tuple[str, str]], required: tuple[str, ...]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    lines = ctx.lines(path)
    next(lines)  # header
    for lineno, text in lines:
        values = text.split("\t")
        try:
            if len(values) != len(fields):
                raise Malformed(
                    f"expected {len(fields)} tab-separated fields ({', '.join(n for n, _ in fields)}), got {len(values)}"
                )
            row: dict[str, Any] = {}
            for (name, typ), v in zip(fields, values):
                if typ == "float":
                    row[name] = parse_float(v, name) if v.strip() else None
                else:
                    row[name] = clean_text(v)
            for name in required:
                if row[name] is None:
                    raise Malformed(f"empty {name!r}")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        rows.append(row)
    return rows


def _rename(fields: list[tuple[str, str]], aliases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Source field -> canonical column, for the first source name present of each alias group."""
    names = [n for n, _ in fields]
    out: dict[str, str] = {}
    for canonical, candidates in aliases.items():
        src = next((c for c in candidates if c in names), None)
        if src is not None:
            out[src] = canonical
    return out


def _require(path: Path, fields: list[tuple[str, str]], name: str, flag: str) -> None:
    if name not in [n for n, _ in fields]:
        raise DatasetError(
            f"{path}:1: the header has no {name!r} field ({[n for n, _ in fields]}); name the right one with {flag}."
        )


def _refuse_benchmark_layout(path: Path, fields: list[tuple[str, str]], item_field: str) -> None:
    """An ``item_id_list`` field means RecBole's pre-split benchmark layout: one row per (prefix, target),
    which read as atomic interactions would keep only the targets, in the file's (reversed) order."""
    list_field = f"{item_field}_list"  # RecBole's LIST_SUFFIX is '_list' by default
    if list_field in [n for n, _ in fields]:
        raise DatasetError(
            f"{path}:1: the header has a {list_field!r} field: this is RecBole's benchmark layout "
            "(<dataset>.train.inter / .valid.inter / .test.inter, each row a user, the items before the target "
            "and the target), not an atomic .inter file of one interaction per row. Convert the folder with "
            "`mmrec data prepare recbole/benchmark <folder> --out DIR` (alias recbole-benchmark), which rebuilds "
            "each user's sequence and keeps the given train/valid/test split."
        )


@CONVERTERS.register(
    "recbole/atomic",
    description="RecBole atomic files <name>.inter (+ optional <name>.item), typed headers",
    aliases=("recbole",),
    example="ml-100k.inter --item ml-100k.item",
)
def recbole_atomic(
    ctx: ConvertContext,
    inter: str | Path,
    item: str | Path | None = None,
    seq_separator: str = " ",
    user_field: str = "user_id",
    item_field: str = "item_id",
    items: ItemsPolicy = "all",
) -> Converted:
    """Read RecBole atomic files.

    Args:
        ctx: reading context (malformed-line policy and report).
        inter: ``<name>.inter``: typed header, tab-separated rows.
        item: ``<name>.item``: the item catalogue. Without it, items are the interacted ids.
        seq_separator: separator of ``token_seq`` values (RecBole's default is a space); used to split
            the categories field.
        user_field: user field of ``inter``.
        item_field: item field of ``inter`` and ``item``.
        items: ``all`` keeps every item of ``item``; ``interacted`` only items with interactions.

    Returns:
        The tables to write.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("recbole/atomic", "data/ml-100k", inter="ml-100k.inter",
        ...                      item="ml-100k.item")  # doctest: +SKIP
    """
    inter_path = require_file(inter, ".inter file")
    ifields = typed_header(ctx, inter_path)
    _refuse_benchmark_layout(inter_path, ifields, item_field)
    _require(inter_path, ifields, user_field, "--user-field")
    _require(inter_path, ifields, item_field, "--item-field")
    ren = {user_field: "user_id", item_field: "item_id", **_rename(ifields, _INTER_ALIASES)}
    inter_rows = _rows(ctx, inter_path, ifields, (user_field, item_field))
    inter_df = pd.DataFrame(inter_rows, columns=[n for n, _ in ifields]).rename(columns=ren)
    extra: dict[str, Any] = {}
    if "timestamp" not in inter_df.columns:
        inter_df["timestamp"] = range(len(inter_df))
        extra["timestamps"] = "file-order"
    else:
        ts = pd.to_numeric(inter_df["timestamp"], errors="coerce")
        if ts.isna().any():
            raise DatasetError(
                f"{inter_path}: {int(ts.isna().sum())} row(s) have an empty or non-numeric timestamp, e.g. "
                f"{inter_df.loc[ts.isna(), 'timestamp'].head(3).tolist()}; declare it 'timestamp:float' and fill it."
            )
        inter_df["timestamp"] = ts.astype("float64").floordiv(1).astype("int64")
    sources = [str(inter_path)]

    if item is not None:
        item_path = require_file(item, ".item file")
        tfields = typed_header(ctx, item_path)
        _require(item_path, tfields, item_field, "--item-field")
        iren = {item_field: "item_id", **_rename(tfields, _ITEM_ALIASES)}
        item_rows = _rows(ctx, item_path, tfields, (item_field,))
        item_df = pd.DataFrame(item_rows, columns=[n for n, _ in tfields]).rename(columns=iren)
        if "release_year" in item_df.columns:  # numeric, like the other converters' release_year
            item_df["release_year"] = pd.to_numeric(item_df["release_year"], errors="coerce").astype("Int64")
        if "categories" in item_df.columns:
            item_df["categories"] = item_df["categories"].map(
                lambda v: [c for c in v.split(seq_separator) if c.strip()] if isinstance(v, str) else None
            )
        sources.append(str(item_path))
    else:
        item_df = pd.DataFrame({"item_id": sorted_ids(inter_df["item_id"].tolist())})
    item_df = restrict_items(item_df, inter_df, items)
    return Converted(items=item_df, interactions=inter_df, source_files=sources, extra_meta=extra)
