"""Amazon review datasets (McAuley et al.): the 2014 and the 2018 releases.

Both releases ship reviews as JSON lines (``reviewerID, asin, overall, unixReviewTime, reviewText,
summary``, ...), gzip-compressed or not. Metadata differs:

- 2014 ``meta_<Category>.json.gz`` lines are **Python literals** (single quotes), not JSON. They are
  parsed with :func:`ast.literal_eval`, which accepts only literals: a line holding code is reported as
  malformed and never executed. (Lines that are valid JSON are accepted too.)
- 2018 metadata is JSON lines with ``description`` as a list of paragraphs, ``category`` as a list,
  ``price`` as a string such as ``"$12.99"`` and ``imageURL`` / ``imageURLHighRes`` lists.

Canonical mapping: ``reviewerID`` -> ``user_id``, ``asin`` -> ``item_id``, ``unixReviewTime`` ->
``timestamp`` (falling back to ``reviewTime`` ``"MM DD, YYYY"``), ``overall`` -> ``rating``,
``reviewText`` -> ``review``, ``summary`` -> extra ``summary`` column. Numbers stored as strings are
coerced. Text is HTML-unescaped (``&amp;`` -> ``&``).
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.datamodules.converters import CONVERTERS
from mmrec.datamodules.converters.common import (
    ConvertContext,
    Converted,
    ItemsPolicy,
    Malformed,
    clean_text,
    parse_float,
    parse_int,
    require_file,
    restrict_items,
    unique_list,
)

# A 2014 meta line starts with its asin; reading it cheaply lets the converter skip the (many) catalogue
# lines of items nobody reviewed without running literal_eval on them.
_LEADING_ASIN = re.compile(r"""^\s*\{\s*['"]asin['"]\s*:\s*['"]([^'"\\]+)['"]""")
_PRICE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")


def _parse_review(text: str) -> dict[str, Any]:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise Malformed(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise Malformed(f"expected a JSON object, got {type(rec).__name__}")
    user = clean_text(rec.get("reviewerID"))
    item = clean_text(rec.get("asin"))
    if user is None:
        raise Malformed("missing or empty 'reviewerID'")
    if item is None:
        raise Malformed("missing or empty 'asin'")
    if rec.get("unixReviewTime") not in (None, ""):
        ts = parse_int(rec["unixReviewTime"], "unixReviewTime")
    elif clean_text(rec.get("reviewTime")):
        try:
            day = datetime.strptime(str(rec["reviewTime"]).strip(), "%m %d, %Y")
        except ValueError:
            raise Malformed(f"reviewTime {rec['reviewTime']!r} is not 'MM DD, YYYY'") from None
        ts = int(day.replace(tzinfo=timezone.utc).timestamp())
    else:
        raise Malformed("missing 'unixReviewTime' (and no 'reviewTime')")
    overall = rec.get("overall")
    rating = None if overall in (None, "") else parse_float(overall, "overall")
    return {
        "user_id": user,
        "item_id": item,
        "timestamp": ts,
        "rating": rating,
        "review": clean_text(rec.get("reviewText"), unescape=True),
        "summary": clean_text(rec.get("summary"), unescape=True),
    }


def _read_reviews(ctx: ConvertContext, path: Path) -> pd.DataFrame:
    rows = [rec for _, rec in ctx.records(path, _parse_review)]
    cols = ["user_id", "item_id", "timestamp", "rating", "review", "summary"]
    inter = pd.DataFrame(rows, columns=cols)
    if inter["summary"].isna().all():
        inter = inter.drop(columns="summary")
    return inter


def _parse_literal(text: str) -> dict[str, Any]:
    """A 2014 meta line: JSON, else a Python literal through ``ast.literal_eval`` (never ``eval``)."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        try:
            rec = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise Malformed(
                f"not a Python literal or JSON object (ast.literal_eval: {type(e).__name__}: {e})"
            ) from None
    if not isinstance(rec, dict):
        raise Malformed(f"expected a dict literal, got {type(rec).__name__}")
    return rec


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise Malformed(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise Malformed(f"expected a JSON object, got {type(rec).__name__}")
    return rec


def _price(value: Any) -> float | None:
    """``12.5``, ``"12.5"``, ``"$1,299.00"`` -> float; ranges, blanks and scraped junk -> ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value == value else None
    m = _PRICE.match(str(value).strip())
    return float(m.group(1).replace(",", "")) if m else None


def _first(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        for v in value:
            s = clean_text(v)
            if s is not None:
                return s
        return None
    return clean_text(value)


def _join_text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        parts = [p for p in (clean_text(v, unescape=True) for v in value) if p is not None]
        return "\n".join(parts) or None
    return clean_text(value, unescape=True)


def _meta_2014(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": clean_text(rec.get("asin")),
        "title": clean_text(rec.get("title"), unescape=True),
        "description": _join_text(rec.get("description")),
        "categories": unique_list(rec.get("categories")) or None,
        "brand": clean_text(rec.get("brand"), unescape=True),
        "price": _price(rec.get("price")),
        "image": clean_text(rec.get("imUrl")),
    }


def _meta_2018(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": clean_text(rec.get("asin")),
        "title": clean_text(rec.get("title"), unescape=True),
        "description": _join_text(rec.get("description")),
        "categories": unique_list(rec.get("category")) or None,
        "brand": clean_text(rec.get("brand"), unescape=True),
        "price": _price(rec.get("price")),
        "image": _first(rec.get("imageURLHighRes")) or _first(rec.get("imageURL")),
    }


def _read_meta(
    ctx: ConvertContext,
    path: Path,
    parse: Any,
    to_row: Any,
    wanted: set[str] | None,
) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {}
    extra: list[dict[str, Any]] = []  # records repeating an asin with different content
    for lineno, text in ctx.lines(path):
        if wanted is not None:
            m = _LEADING_ASIN.match(text)
            if m and m.group(1) not in wanted:
                continue
        try:
            row = to_row(parse(text))
            if row["item_id"] is None:
                raise Malformed("missing or empty 'asin'")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        if wanted is not None and row["item_id"] not in wanted:
            continue
        prev = rows.get(row["item_id"])
        if prev is None:
            rows[row["item_id"]] = row
        elif prev == row:
            # The 2018 metadata repeats some records verbatim; dropping a verbatim copy loses nothing.
            ctx.report.add(
                "identical duplicate metadata records (dropped)", f"{path.name}:{lineno}: {row['item_id']}"
            )
        else:
            extra.append(row)  # left for validate_tables: an error, or keep-first with --skip_bad
    cols = ["item_id", "title", "description", "categories", "brand", "price", "image"]
    return pd.DataFrame([*rows.values(), *extra], columns=cols)


def _convert(
    ctx: ConvertContext,
    reviews: str | Path,
    meta: str | Path | None,
    items: ItemsPolicy,
    *,
    parse_meta: Any,
    to_row: Any,
) -> Converted:
    reviews_path = require_file(reviews, "reviews file")
    meta_path = require_file(meta, "metadata file") if meta is not None else None
    inter = _read_reviews(ctx, reviews_path)
    sources = [str(reviews_path)]
    if meta_path is None:
        item_table = pd.DataFrame({"item_id": list(dict.fromkeys(inter["item_id"].tolist()))})
    else:
        wanted = set(inter["item_id"]) if items == "interacted" else None
        item_table = _read_meta(ctx, meta_path, parse_meta, to_row, wanted)
        item_table = restrict_items(item_table, inter, items)
        sources.append(str(meta_path))
    return Converted(items=item_table, interactions=inter, source_files=sources)


@CONVERTERS.register(
    "amazon/2014",
    description="Amazon 2014 reviews JSON lines (+ optional Python-literal meta_<Cat>.json.gz)",
    aliases=("amazon2014",),
    example="reviews_Beauty_5.json.gz --meta meta_Beauty.json.gz",
)
def amazon_2014(
    ctx: ConvertContext,
    reviews: str | Path,
    meta: str | Path | None = None,
    items: ItemsPolicy = "interacted",
) -> Converted:
    """Read an Amazon 2014 review file and, optionally, its metadata.

    Args:
        ctx: reading context (malformed-line policy and report).
        reviews: ``reviews_<Category>[_5].json[.gz]``, one JSON object per line.
        meta: ``meta_<Category>.json[.gz]``, one Python-literal dict per line (``imUrl`` becomes the
            ``image`` column; nested ``categories`` are flattened). Without it, items carry only ids.
        items: ``interacted`` keeps the metadata of reviewed items only (a meta file covers the whole
            category); ``all`` keeps every metadata record.

    Returns:
        The tables to write.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("amazon/2014", "data/beauty",
        ...                      reviews="reviews_Beauty_5.json.gz", meta="meta_Beauty.json.gz")  # doctest: +SKIP
    """
    return _convert(ctx, reviews, meta, items, parse_meta=_parse_literal, to_row=_meta_2014)


@CONVERTERS.register(
    "amazon/2018",
    description="Amazon 2018 reviews JSON lines (+ optional JSON-lines metadata)",
    aliases=("amazon2018",),
    example="Musical_Instruments_5.json.gz --meta meta_Musical_Instruments.json.gz",
)
def amazon_2018(
    ctx: ConvertContext,
    reviews: str | Path,
    meta: str | Path | None = None,
    items: ItemsPolicy = "interacted",
) -> Converted:
    """Read an Amazon 2018 review file and, optionally, its metadata.

    Args:
        ctx: reading context (malformed-line policy and report).
        reviews: ``<Category>[_5].json[.gz]``, one JSON object per line.
        meta: ``meta_<Category>.json[.gz]``, JSON lines: ``description`` paragraphs are joined with
            newlines, ``price`` strings such as ``"$12.99"`` parsed (ranges and junk become null),
            the first ``imageURLHighRes`` (else ``imageURL``) becomes ``image``. Verbatim duplicate
            records are dropped and counted.
        items: ``interacted`` keeps the metadata of reviewed items only; ``all`` keeps every record.

    Returns:
        The tables to write.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("amazon/2018", "data/instruments",
        ...                      reviews="Musical_Instruments_5.json.gz")  # doctest: +SKIP
    """
    return _convert(ctx, reviews, meta, items, parse_meta=_parse_json_object, to_row=_meta_2018)
