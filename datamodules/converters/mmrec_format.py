"""The MMRec toolkit's format: ``<name>.inter`` + optional item text TSV + ``features_npy/*.npy``.

``<name>.inter`` is a TSV with a header naming ``userID``, ``itemID``, optionally ``rating``,
``timestamp`` and ``x_label`` (0 train, 1 valid, 2 test; becomes the canonical ``split`` column). Ids are
0-based ints. Without a ``timestamp`` column the canonical timestamp is the row's position in the file
and ``dataset.json`` records ``"timestamps": "file-order"``.

Items are every id ``0..max`` (row k = item k, ids as strings), so that the feature matrices, where row
k is item k, align with the item table. Each ``.npy`` is imported as an embedding store at
``<dataset>/stores/<npy stem>/`` (encoder ``import/npy``, weights ``sha256:<file hash>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.data.canonical import SPLIT_CODES, DatasetError
from mmrec.datamodules.converters import CONVERTERS
from mmrec.datamodules.converters.common import (
    ConvertContext,
    Converted,
    Malformed,
    StoreImport,
    clean_text,
    parse_float,
    parse_int,
    require_file,
)

_ID_COLUMNS = ("item_idx", "itemID", "item_id", "iid")
_TITLE_COLUMNS = ("title", "name", "item_name", "artist_name")
_DESCRIPTION_COLUMNS = ("description", "text", "tags_text", "tags")


def _nonneg_id(value: str, what: str) -> str:
    i = parse_int(value, what)
    if i < 0:
        raise Malformed(f"{what} must be a non-negative integer, got {value!r}")
    return str(i)


def _read_inter(
    ctx: ConvertContext, path: Path, user_field: str, item_field: str
) -> tuple[pd.DataFrame, bool]:
    header = ctx.header(path)
    for needed in (user_field, item_field):
        if needed not in header:
            raise DatasetError(
                f"{path}:1: the header {header} has no {needed!r} column. MMRec .inter files start with "
                "'userID<TAB>itemID<TAB>rating<TAB>x_label'; name other columns with --user-field/--item-field."
            )
    pos = {name: header.index(name) for name in header}
    has_time = "timestamp" in pos
    has_split = "x_label" in pos
    has_rating = "rating" in pos
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    ratings: list[float] = []
    splits: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    lines = ctx.lines(path)
    next(lines)  # header
    for lineno, text in lines:
        fields = text.split("\t")
        try:
            if len(fields) != len(header):
                raise Malformed(
                    f"expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(fields)}"
                )
            user = _nonneg_id(fields[pos[user_field]], user_field)
            item = _nonneg_id(fields[pos[item_field]], item_field)
            if (user, item) in seen:
                raise Malformed(
                    f"user {user} and item {item} already form an interaction on line {seen[user, item]}"
                )
            ts = parse_int(fields[pos["timestamp"]], "timestamp") if has_time else len(users)
            rating = parse_float(fields[pos["rating"]], "rating") if has_rating else float("nan")
            split = parse_int(fields[pos["x_label"]], "x_label") if has_split else 0
            if split not in SPLIT_CODES.values():
                raise Malformed(f"x_label must be 0 (train), 1 (valid) or 2 (test), got {split}")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        seen[user, item] = lineno
        users.append(user)
        items.append(item)
        times.append(ts)
        ratings.append(rating)
        splits.append(split)
    inter = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "rating": ratings})
    if has_split:
        inter["split"] = splits
    return inter, has_time


def _pick(
    header: list[str], given: str | None, defaults: tuple[str, ...], what: str, flag: str, path: Path
) -> str | None:
    if given is not None:
        if given not in header:
            raise DatasetError(
                f"{path}: no column {given!r} for the {what} ({flag}); the header is {header}."
            )
        return given
    return next((c for c in defaults if c in header), None)


def _read_item_text(
    ctx: ConvertContext,
    path: Path,
    id_column: str | None,
    title_column: str | None,
    description_column: str | None,
    categories_column: str | None,
    categories_sep: str,
) -> pd.DataFrame:
    header = ctx.header(path)
    id_col = _pick(header, id_column, _ID_COLUMNS, "item id", "--item-id-column", path)
    if id_col is None:
        raise DatasetError(
            f"{path}: none of the columns {header} is a known item id column ({', '.join(_ID_COLUMNS)}); "
            "name it with --item-id-column."
        )
    title_col = _pick(header, title_column, _TITLE_COLUMNS, "title", "--title-column", path)
    desc_col = _pick(
        header, description_column, _DESCRIPTION_COLUMNS, "description", "--description-column", path
    )
    cat_col = _pick(header, categories_column, (), "categories", "--categories-column", path)
    used = {id_col, title_col, desc_col, cat_col}
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    lines = ctx.lines(path)
    next(lines)  # header
    for lineno, text in lines:
        fields = text.split("\t")
        try:
            if len(fields) != len(header):
                raise Malformed(
                    f"expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(fields)}"
                )
            rec = dict(zip(header, fields))
            iid = _nonneg_id(rec[id_col], id_col)
            if iid in seen:
                raise Malformed(f"item {iid} already described on line {seen[iid]}")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        seen[iid] = lineno
        row: dict[str, Any] = {"item_id": iid}
        if title_col is not None:
            row["title"] = clean_text(rec[title_col])
        if desc_col is not None:
            row["description"] = clean_text(rec[desc_col])
        if cat_col is not None:
            cats = [c for c in (clean_text(x) for x in rec[cat_col].split(categories_sep)) if c is not None]
            row["categories"] = list(dict.fromkeys(cats)) or None
        for col in header:
            if col not in used:
                row[col] = clean_text(rec[col])
        rows.append(row)
    return pd.DataFrame(rows)


def _feature_files(features: str | Path) -> list[Path]:
    p = Path(features).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(p.glob("*.npy"))
        if not files:
            raise DatasetError(f"feature folder {p} holds no .npy file; pass the MMRec features_npy/ folder.")
    else:
        raise DatasetError(f"features {p} does not exist; pass a folder of .npy files or one .npy file.")
    return files


def _check_matrix(path: Path, n_items: int) -> None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"{path}: not a numeric .npy matrix ({e}).") from None
    if arr.ndim != 2:
        raise DatasetError(f"{path}: expected a 2-D (num_items, dim) matrix, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: expected a numeric matrix, got dtype {arr.dtype}.")
    if arr.shape[0] != n_items:
        raise DatasetError(
            f"{path}: has {arr.shape[0]} rows but the dataset has {n_items} items (ids 0..{n_items - 1}); "
            "row k must be the vector of item k. Pass the features that belong to this .inter file "
            "(or an item text file that lists every item)."
        )


@CONVERTERS.register(
    "mmrec/inter",
    description="MMRec <name>.inter (userID itemID rating x_label) + item text TSV + features_npy/",
    aliases=("mmrec",),
    example="lfm2k.inter --item-text item_index_map.tsv --features features_npy/",
)
def mmrec_inter(
    ctx: ConvertContext,
    inter: str | Path,
    item_text: str | Path | None = None,
    features: str | Path | None = None,
    item_id_column: str | None = None,
    title_column: str | None = None,
    description_column: str | None = None,
    categories_column: str | None = None,
    categories_sep: str = ",",
    user_field: str = "userID",
    item_field: str = "itemID",
) -> Converted:
    """Read an MMRec dataset: interactions with a given split, item text and feature matrices.

    Args:
        ctx: reading context (malformed-line policy and report).
        inter: ``<name>.inter`` TSV with a header; ``x_label`` becomes ``split``. A user-item pair may
            appear once (a repeat is a malformed line).
        item_text: item TSV with a header, e.g. ``item_idx<TAB>artistID<TAB>artist_name<TAB>tags_text``;
            unnamed columns are kept as extra item columns.
        features: a folder of ``.npy`` files (or one file), row k = item k; each becomes the embedding
            store ``stores/<stem>/``. Row counts must equal the number of items.
        item_id_column: id column of ``item_text`` (default: first of item_idx, itemID, item_id, iid).
        title_column: title column (default: first of title, name, item_name, artist_name).
        description_column: description column (default: first of description, text, tags_text, tags).
        categories_column: a column of ``categories_sep``-separated categories (default: none).
        categories_sep: separator of ``categories_column``.
        user_field: user column of ``inter``.
        item_field: item column of ``inter``.

    Returns:
        The tables to write, with the stores to import.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("mmrec/inter", "data/lfm2k", inter="lfm2k.inter",
        ...                      features="features_npy")  # doctest: +SKIP
    """
    inter_path = require_file(inter, ".inter file")
    inter_df, has_time = _read_inter(ctx, inter_path, user_field, item_field)
    sources = [str(inter_path)]
    text_df = None
    if item_text is not None:
        text_path = require_file(item_text, "item text file")
        text_df = _read_item_text(
            ctx,
            text_path,
            item_id_column,
            title_column,
            description_column,
            categories_column,
            categories_sep,
        )
        sources.append(str(text_path))
    ids = [int(i) for i in inter_df["item_id"]]
    if text_df is not None and len(text_df):
        ids += [int(i) for i in text_df["item_id"]]
    n_items = max(ids) + 1 if ids else 0
    items = pd.DataFrame({"item_id": [str(k) for k in range(n_items)]})
    if text_df is not None and len(text_df):
        items = items.merge(text_df, on="item_id", how="left", sort=False)
        items = items.astype(object).where(items.notna(), None)
    stores: list[StoreImport] = []
    if features is not None:
        for npy in _feature_files(features):
            _check_matrix(npy, n_items)
            stores.append(StoreImport(name=npy.stem, npy=npy))
            sources.append(str(npy))
    extra: dict[str, Any] = {"item_order": "row k = item k (0-based ids)"}
    if not has_time:
        extra["timestamps"] = "file-order"
    return Converted(
        items=items, interactions=inter_df, source_files=sources, extra_meta=extra, stores=stores
    )
