"""MovieLens (GroupLens) raw releases: 100k (``u.data``, ``u.item``, ``u.genre``) and 1M (``ratings.dat``,
``movies.dat``).

Canonical mapping: ratings -> interactions (``timestamp`` in seconds, ``rating`` 1-5); movies -> items
with ``title``, genres as ``categories``, and extra columns ``release_date`` (100k, ISO ``YYYY-MM-DD``),
``imdb_url`` (100k) or ``release_year`` (1M, from the title's ``(YYYY)``). Movie files are latin-1.
Every movie of the catalogue is kept, rated or not.
"""

from __future__ import annotations

import re
from datetime import datetime
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
    parse_int,
    require_dir,
    restrict_items,
)

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _rating_parser(sep: str) -> Any:
    def parse(text: str) -> tuple[str, str, float, int]:
        fields = text.split(sep)
        if len(fields) != 4:
            raise Malformed(
                f"expected 4 {sep!r}-separated fields (user, item, rating, timestamp), got {len(fields)}"
            )
        user, item = fields[0].strip(), fields[1].strip()
        parse_int(user, "user id")
        parse_int(item, "item id")
        return user, item, parse_float(fields[2], "rating"), parse_int(fields[3], "timestamp")

    return parse


def _ratings(ctx: ConvertContext, path: Path, sep: str) -> pd.DataFrame:
    rows = [rec for _, rec in ctx.records(path, _rating_parser(sep), encoding="latin-1")]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def _genres_100k(ctx: ConvertContext, path: Path) -> list[str]:
    names: dict[int, str] = {}

    def parse(text: str) -> tuple[int, str]:
        fields = text.split("|")
        if len(fields) != 2 or not fields[0].strip():
            raise Malformed("expected 'genre name|index'")
        return parse_int(fields[1], "genre index"), fields[0].strip()

    for lineno, (idx, name) in ctx.records(path, parse, encoding="latin-1"):
        if idx in names:
            raise DatasetError(f"{path}:{lineno}: genre index {idx} appears twice; u.genre is corrupt.")
        names[idx] = name
    if sorted(names) != list(range(len(names))) or not names:
        raise DatasetError(f"{path}: genre indices must be 0..n-1, got {sorted(names)}; u.genre is corrupt.")
    return [names[i] for i in range(len(names))]


def _release_date(value: str) -> str | None:
    s = value.strip()
    if not s:
        return None
    try:
        return datetime.strptime(s, "%d-%b-%Y").date().isoformat()
    except ValueError:
        raise Malformed(f"release date {s!r} is not DD-Mon-YYYY") from None


@CONVERTERS.register(
    "movielens/100k",
    description="MovieLens 100k folder (u.data, u.item, u.genre)",
    aliases=("ml-100k", "movielens100k"),
    example="ml-100k/",
)
def movielens_100k(ctx: ConvertContext, root: str | Path, items: ItemsPolicy = "all") -> Converted:
    """Read the MovieLens 100k release folder.

    Args:
        ctx: reading context (malformed-line policy and report).
        root: the folder holding ``u.data`` (``user<TAB>item<TAB>rating<TAB>timestamp``), ``u.item``
            (``|``-separated, latin-1, 19 genre flags) and ``u.genre`` (genre names).
        items: ``all`` keeps every movie of ``u.item``; ``interacted`` only rated ones.

    Returns:
        The tables to write.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("movielens/100k", "data/ml-100k", root="raw/ml-100k")  # doctest: +SKIP
    """
    folder = require_dir(root, "MovieLens 100k folder", expect=("u.data", "u.item", "u.genre"))
    genres = _genres_100k(ctx, folder / "u.genre")
    n_fields = 5 + len(genres)

    def parse_item(text: str) -> dict[str, Any]:
        fields = text.split("|")
        if len(fields) != n_fields:
            raise Malformed(
                f"expected {n_fields} '|'-separated fields (5 + {len(genres)} genre flags), got {len(fields)}"
            )
        flags = fields[5:]
        if any(f.strip() not in ("0", "1") for f in flags):
            raise Malformed("genre flags must be 0 or 1")
        item = fields[0].strip()
        parse_int(item, "movie id")
        title = clean_text(fields[1])
        return {
            "item_id": item,
            # GroupLens marks the one movie whose metadata is lost with the title "unknown".
            "title": None if title == "unknown" else title,
            "categories": [g for g, f in zip(genres, flags) if f.strip() == "1"] or None,
            "release_date": _release_date(fields[2]),
            "imdb_url": clean_text(fields[4]),
        }

    item_rows = [rec for _, rec in ctx.records(folder / "u.item", parse_item, encoding="latin-1")]
    item_df = pd.DataFrame(item_rows, columns=["item_id", "title", "categories", "release_date", "imdb_url"])
    inter = _ratings(ctx, folder / "u.data", "\t")
    item_df = restrict_items(item_df, inter, items)
    sources = [str(folder / n) for n in ("u.data", "u.item", "u.genre")]
    return Converted(items=item_df, interactions=inter, source_files=sources)


@CONVERTERS.register(
    "movielens/1m",
    description="MovieLens 1M folder (ratings.dat, movies.dat, '::'-separated)",
    aliases=("ml-1m", "movielens1m"),
    example="ml-1m/",
)
def movielens_1m(ctx: ConvertContext, root: str | Path, items: ItemsPolicy = "all") -> Converted:
    """Read the MovieLens 1M release folder.

    Args:
        ctx: reading context (malformed-line policy and report).
        root: the folder holding ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and
            ``movies.dat`` (``MovieID::Title::Genre|Genre``, latin-1).
        items: ``all`` keeps every movie of ``movies.dat``; ``interacted`` only rated ones.

    Returns:
        The tables to write.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("movielens/1m", "data/ml-1m", root="raw/ml-1m")  # doctest: +SKIP
    """
    folder = require_dir(root, "MovieLens 1M folder", expect=("ratings.dat", "movies.dat"))

    def parse_movie(text: str) -> dict[str, Any]:
        fields = text.split("::")
        if len(fields) != 3:
            raise Malformed(f"expected 3 '::'-separated fields (movie id, title, genres), got {len(fields)}")
        item = fields[0].strip()
        parse_int(item, "movie id")
        title = clean_text(fields[1])
        year = _YEAR.search(title or "")
        cats = [g for g in (clean_text(x) for x in fields[2].split("|")) if g is not None]
        return {
            "item_id": item,
            "title": title,
            "categories": cats or None,
            "release_year": int(year.group(1)) if year else None,
        }

    item_rows = [rec for _, rec in ctx.records(folder / "movies.dat", parse_movie, encoding="latin-1")]
    item_df = pd.DataFrame(item_rows, columns=["item_id", "title", "categories", "release_year"])
    item_df["release_year"] = item_df["release_year"].astype("Int64")
    inter = _ratings(ctx, folder / "ratings.dat", "::")
    item_df = restrict_items(item_df, inter, items)
    sources = [str(folder / n) for n in ("ratings.dat", "movies.dat")]
    return Converted(items=item_df, interactions=inter, source_files=sources)


@CONVERTERS.register(
    "movielens/auto",
    description="MovieLens 100k or 1M, detected from the files in the folder",
    aliases=("movielens",),
    example="ml-1m/",
)
def movielens_auto(ctx: ConvertContext, root: str | Path, items: ItemsPolicy = "all") -> Converted:
    """Read a MovieLens folder, choosing 100k (``u.data``) or 1M (``ratings.dat``) from its files.

    Args:
        ctx: reading context (malformed-line policy and report).
        root: the release folder.
        items: ``all`` keeps every movie; ``interacted`` only rated ones.

    Returns:
        The tables to write.

    Raises:
        DatasetError: when the folder holds neither release.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("movielens", "data/ml", root="raw/ml-1m")  # doctest: +SKIP
    """
    folder = require_dir(root, "MovieLens folder")
    if (folder / "u.data").is_file():
        conv = movielens_100k(ctx, folder, items)
        conv.extra_meta["detected"] = "movielens/100k"
        return conv
    if (folder / "ratings.dat").is_file():
        conv = movielens_1m(ctx, folder, items)
        conv.extra_meta["detected"] = "movielens/1m"
        return conv
    raise DatasetError(
        f"{folder} holds neither u.data (MovieLens 100k) nor ratings.dat (MovieLens 1M). Other releases "
        "(10M, 20M, 25M: ratings.csv) are not supported yet; convert them to RecBole atomic files."
    )
