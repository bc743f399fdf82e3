"""Sequence files without timestamps: S3-Rec / P5 ``uid iid ...`` files and user-sequence TSVs.

Both list each user's items in chronological order, without times. The canonical ``timestamp`` is the
0-based position in the user's sequence and ``dataset.json`` records ``"timestamps": "sequence-order"``,
so leave-one-out by time is exactly "last item = test". An item repeated in a sequence (a re-purchase)
stays two interactions at two positions; the count is recorded as ``repeated_user_item_pairs``.
"""

from __future__ import annotations

import json
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
    require_file,
    restrict_items,
    sorted_ids,
)

_TITLE_COLUMNS = ("title", "name", "item_name")
_CATEGORY_COLUMNS = ("attributes", "categories", "category", "attrs")


def _load_datamaps(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(id2user, id2item)`` from a P5 datamaps JSON (``id2*`` if present, else inverted ``*2id``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected P5 datamaps.") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'user2id' and 'item2id'.")

    def mapping(kind: str) -> dict[str, str]:
        direct = data.get(f"id2{kind}")
        if isinstance(direct, dict) and direct:
            return {str(k): str(v) for k, v in direct.items()}
        inverse = data.get(f"{kind}2id")
        if isinstance(inverse, dict) and inverse:
            out: dict[str, str] = {}
            for raw, i in inverse.items():
                if str(i) in out:
                    raise DatasetError(
                        f"{path}: '{kind}2id' maps two raw ids to {i}; the datamaps are corrupt."
                    )
                out[str(i)] = str(raw)
            return out
        raise DatasetError(f"{path}: no '{kind}2id' (or 'id2{kind}') mapping; is this a P5 datamaps file?")

    return mapping("user"), mapping("item")


def _repeat_count(inter: pd.DataFrame) -> int:
    return int(inter.duplicated(subset=["user_id", "item_id"]).sum())


def _sequence_rows(
    ctx: ConvertContext,
    path: Path,
    split_line: Any,
    id2user: dict[str, str] | None = None,
    id2item: dict[str, str] | None = None,
) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}

    for lineno, text in ctx.lines(path):
        try:
            user, seq = split_line(text)
            if user in first_line:
                raise Malformed(f"user {user!r} already has a sequence on line {first_line[user]}")
            if id2user is not None:
                if user not in id2user:
                    raise Malformed(f"user id {user!r} is not in the datamaps (id2user)")
                raw_user = id2user[user]
            else:
                raw_user = user
            if id2item is not None:
                missing = [i for i in seq if i not in id2item]
                if missing:
                    raise Malformed(f"item id(s) {missing[:5]} not in the datamaps (id2item)")
                seq = [id2item[i] for i in seq]
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        first_line[user] = lineno
        if not seq:
            ctx.report.add(
                "users with an empty sequence (no interactions)", f"{path.name}:{lineno}: user {user}"
            )
            continue
        users.extend([raw_user] * len(seq))
        items.extend(seq)
        positions.extend(range(len(seq)))
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": positions})


def _split_s3rec(text: str) -> tuple[str, list[str]]:
    tokens = text.split()
    return tokens[0], tokens[1:]


def _split_tsv(text: str) -> tuple[str, list[str]]:
    fields = text.split("\t")
    if len(fields) != 2:
        raise Malformed(f"expected 2 tab-separated fields (user id, item ids), got {len(fields)}")
    user = fields[0].strip()
    if not user:
        raise Malformed("empty user id")
    return user, fields[1].split()


def _read_item_table(ctx: ConvertContext, path: Path, id2item: dict[str, str] | None) -> pd.DataFrame:
    header = ctx.header(path)
    if len(header) < 2 or len(set(header)) != len(header) or any(not h for h in header):
        raise DatasetError(
            f"{path}:1: expected a header of unique tab-separated column names, e.g. "
            f"'p5_item_id<TAB>asin<TAB>title<TAB>attributes'; got {header}."
        )
    id_col = header[0]
    title_col = next((c for c in header if c.lower() in _TITLE_COLUMNS), None)
    cat_col = next((c for c in header if c.lower() in _CATEGORY_COLUMNS), None)
    rows: list[dict[str, Any]] = []
    lines = ctx.lines(path)
    next(lines)  # the header, read above
    for lineno, text in lines:
        fields = text.split("\t")
        if len(fields) != len(header):
            ctx.bad(
                path,
                lineno,
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(fields)}",
                text,
            )
            continue
        rec = dict(zip(header, fields))
        iid = rec[id_col].strip()
        if not iid:
            ctx.bad(path, lineno, f"empty {id_col}", text)
            continue
        row: dict[str, Any] = {"item_id": iid}
        if id2item is not None:
            if iid not in id2item:
                ctx.bad(path, lineno, f"{id_col} {iid!r} is not in the datamaps (id2item)", text)
                continue
            row["item_id"] = id2item[iid]
            row[id_col] = iid
            raw = clean_text(rec.get("asin"))
            if raw is not None and raw != id2item[iid]:
                ctx.bad(
                    path,
                    lineno,
                    f"asin {raw!r} disagrees with the datamaps, which map {iid} to {id2item[iid]!r}",
                    text,
                )
                continue
        if title_col is not None:
            row["title"] = clean_text(rec[title_col], unescape=True)
        if cat_col is not None:
            cats = [
                c for c in (clean_text(v, unescape=True) for v in rec[cat_col].split("|")) if c is not None
            ]
            row["categories"] = list(dict.fromkeys(cats)) or None
        for col in header:
            if col in (id_col, title_col, cat_col) or (id2item is not None and col == "asin"):
                continue
            row[col] = clean_text(rec[col])
        rows.append(row)
    return pd.DataFrame(rows)


@CONVERTERS.register(
    "sequence/s3rec",
    description="S3-Rec / P5 'uid iid1 iid2 ...' file (+ optional P5 datamaps and item TSV)",
    aliases=("s3rec", "p5"),
    example="Beauty.txt --datamaps beauty_datamaps.json --item_table Beauty_items.tsv",
)
def s3rec(
    ctx: ConvertContext,
    sequences: str | Path,
    datamaps: str | Path | None = None,
    item_table: str | Path | None = None,
    items: ItemsPolicy = "all",
) -> Converted:
    """Read an S3-Rec / P5 sequence file: one user per line, ``uid iid1 iid2 ...`` in time order.

    Args:
        ctx: reading context (malformed-line policy and report).
        sequences: the sequence file (``Beauty.txt``); ids are whitespace-separated tokens.
        datamaps: P5 ``<name>_datamaps.json`` (``user2id``/``item2id`` or ``id2user``/``id2item``). When
            given, canonical ids are the raw reviewerIDs / ASINs and the P5 int is kept as an extra column.
        item_table: TSV with a header whose first column is the file's item id, e.g.
            ``p5_item_id<TAB>asin<TAB>title<TAB>attributes``; ``title`` becomes the title (HTML
            entities decoded), ``attributes`` (``a|b|c``) the categories, other columns are kept. Its
            ``asin`` must agree with the datamaps. Without it, items are the interacted ids.
        items: ``all`` keeps every row of the item table; ``interacted`` only items with interactions.

    Returns:
        The tables to write; ``timestamp`` is the position in the sequence.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("sequence/s3rec", "data/beauty", sequences="Beauty.txt",
        ...                      datamaps="beauty_datamaps.json")  # doctest: +SKIP
    """
    seq_path = require_file(sequences, "sequence file")
    sources = [str(seq_path)]
    id2user = id2item = None
    if datamaps is not None:
        maps_path = require_file(datamaps, "datamaps file")
        id2user, id2item = _load_datamaps(maps_path)
        sources.append(str(maps_path))
    inter = _sequence_rows(ctx, seq_path, _split_s3rec, id2user, id2item)
    if item_table is not None:
        table_path = require_file(item_table, "item table")
        item_df = _read_item_table(ctx, table_path, id2item)
        sources.append(str(table_path))
    else:
        item_df = pd.DataFrame({"item_id": sorted_ids(inter["item_id"].tolist())})
    item_df = restrict_items(item_df, inter, items)
    extra = {
        "timestamps": "sequence-order",
        "id_mapping": "datamaps (raw ids)" if datamaps is not None else "ids as in the sequence file",
        "repeated_user_item_pairs": _repeat_count(inter),
    }
    return Converted(items=item_df, interactions=inter, source_files=sources, extra_meta=extra)


def _read_titles(ctx: ConvertContext, path: Path) -> pd.DataFrame:
    ids: list[str] = []
    titles: list[str | None] = []
    for lineno, text in ctx.lines(path):
        fields = text.split("\t")
        if lineno == 1 and [f.strip().lower() for f in fields] == ["item_id", "title"]:
            continue  # tolerate a header although the format has none
        if len(fields) != 2:
            ctx.bad(
                path, lineno, f"expected 2 tab-separated fields (item id, title), got {len(fields)}", text
            )
            continue
        iid = fields[0].strip()
        if not iid:
            ctx.bad(path, lineno, "empty item id", text)
            continue
        ids.append(iid)
        titles.append(clean_text(fields[1], unescape=True))
    return pd.DataFrame({"item_id": ids, "title": titles})


@CONVERTERS.register(
    "sequence/tsv",
    description="user-sequence TSV 'user<TAB>item item ...' (+ optional item-title TSV)",
    aliases=("seq-tsv", "user-sequence-tsv"),
    example="am_Musical_Instruments_users_10K.tsv --titles Musical_Instruments_items.tsv",
)
def user_sequence_tsv(
    ctx: ConvertContext,
    sequences: str | Path,
    titles: str | Path | None = None,
    items: ItemsPolicy = "all",
) -> Converted:
    """Read a user-sequence TSV (``user_id<TAB>item ids separated by spaces``, chronological).

    Args:
        ctx: reading context (malformed-line policy and report).
        sequences: the user-sequence TSV, no header.
        titles: item-title TSV ``item_id<TAB>title``, no header; titles are stripped and HTML entities
            decoded. It is the item catalogue: interactions with items it lacks are unknown-item errors
            (``--skip_bad`` drops them). Without it, items are the interacted ids.
        items: ``all`` keeps every catalogue item, including never-interacted ones (they exist in the
            catalogue and can be recommended); ``interacted`` keeps only items with interactions.

    Returns:
        The tables to write; ``timestamp`` is the position in the sequence.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("sequence/tsv", "data/instruments", sequences="users.tsv",
        ...                      titles="items.tsv")  # doctest: +SKIP
    """
    seq_path = require_file(sequences, "sequence file")
    inter = _sequence_rows(ctx, seq_path, _split_tsv)
    sources = [str(seq_path)]
    if titles is not None:
        titles_path = require_file(titles, "title file")
        item_df = _read_titles(ctx, titles_path)
        sources.append(str(titles_path))
    else:
        item_df = pd.DataFrame({"item_id": sorted_ids(inter["item_id"].tolist())})
    item_df = restrict_items(item_df, inter, items)
    extra = {"timestamps": "sequence-order", "repeated_user_item_pairs": _repeat_count(inter)}
    return Converted(items=item_df, interactions=inter, source_files=sources, extra_meta=extra)
