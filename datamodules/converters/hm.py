"""H&M Personalized Fashion Recommendations, sample layout (``hm-sample/``).

Input folder: ``articles_sample.parquet`` (``article_id``, ``prod_name``, ``product_type_name``,
``product_group_name``, ``colour_group_name``, ``detail_desc``...), ``transactions_sample.parquet``
(``t_dat`` ``YYYY-MM-DD``, ``customer_id``, ``article_id``, ``price``) and ``images/<10-digit article
id>.jpg`` (H&M's own naming: the article id zero-padded to 10 digits).

Canonical mapping:

- items, in the order of ``articles_sample.parquet``: ``item_id`` = the 10-digit zero-padded article id
  (the image file's stem), ``title`` = ``prod_name``, ``description`` = ``detail_desc``, ``categories`` =
  [product type, product group, colour group], ``price`` = median transaction price (H&M's normalised
  unit), ``image`` = the **absolute** path of ``images/<id>.jpg`` when that photo exists, else null; the
  other article attributes are kept as extra columns (``product_code``, ``graphical_appearance_name``,
  ``perceived_colour_master_name``, ``index_group_name``, ``section_name``, ``garment_group_name``,
  ``department_name``);
- interactions: one per purchase, ``timestamp`` = ``t_dat`` as int seconds (UTC midnight), extra
  ``price`` and ``quantity``. Several purchases of the same article by the same customer on the same day
  are merged into one row (``quantity`` counts them); how many were merged is in ``dataset.json``'s
  conversion report.

Example:
    >>> from mmrec.datamodules.converters import prepare_dataset
    >>> ds = prepare_dataset("hm/sample", "data/hm", root="../shared/data/hm-sample")  # doctest: +SKIP
    >>> int(ds.items["image"].notna().sum())  # doctest: +SKIP
    100
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.converters import CONVERTERS
from mmrec.datamodules.converters.common import (
    ConvertContext,
    Converted,
    ItemsPolicy,
    clean_text,
    require_dir,
    restrict_items,
)

ARTICLES = "articles_sample.parquet"
TRANSACTIONS = "transactions_sample.parquet"
_NEEDED_ARTICLES = (
    "article_id",
    "prod_name",
    "product_type_name",
    "product_group_name",
    "colour_group_name",
    "detail_desc",
)
_NEEDED_TRANSACTIONS = ("t_dat", "customer_id", "article_id")
_EXTRA = (
    "product_code",
    "graphical_appearance_name",
    "perceived_colour_master_name",
    "index_group_name",
    "section_name",
    "garment_group_name",
    "department_name",
)


def article_key(article_id: int | str) -> str:
    """H&M's 10-digit article id string (the image file stem).

    Example:
        >>> article_key(108775015)
        '0108775015'
    """
    s = str(article_id).strip()
    if not s.isdigit() or len(s) > 10:
        raise DatasetError(f"article_id {article_id!r} is not an integer of at most 10 digits.")
    return s.zfill(10)


def _read(path: Path, needed: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}).") from e
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{path} lacks column(s) {missing}; its columns are {list(df.columns)}. Is this the H&M sample?"
        )
    return df


@CONVERTERS.register(
    "hm/sample",
    description="H&M fashion sample folder (articles_sample.parquet, transactions_sample.parquet, images/)",
    aliases=("hm", "hm-sample"),
    example="../shared/data/hm-sample/",
)
def hm_sample(ctx: ConvertContext, root: str | Path, items: ItemsPolicy = "all") -> Converted:
    """Read the H&M sample folder.

    Args:
        ctx: reading context (the report of merged duplicate purchases).
        root: the folder holding ``articles_sample.parquet``, ``transactions_sample.parquet`` and ``images/``.
        items: ``all`` keeps every article; ``interacted`` only purchased ones.

    Returns:
        The tables to write (image paths absolute, so the dataset can live anywhere).
    """
    folder = require_dir(root, "H&M sample folder", expect=(ARTICLES, TRANSACTIONS)).resolve()
    art = _read(folder / ARTICLES, _NEEDED_ARTICLES)
    tx = _read(folder / TRANSACTIONS, _NEEDED_TRANSACTIONS)
    images = folder / "images"

    art = art.assign(item_id=art["article_id"].map(article_key))
    dup = art["item_id"].duplicated()
    if dup.any():
        raise DatasetError(
            f"{folder / ARTICLES}: article ids repeat, e.g. {art.loc[dup, 'item_id'].head(3).tolist()}."
        )

    def image_path(key: str) -> str | None:
        p = images / f"{key}.jpg"
        return str(p) if p.is_file() else None

    def cats(row: pd.Series) -> list[str] | None:
        out: list[str] = []
        for col in ("product_type_name", "product_group_name", "colour_group_name"):
            v = clean_text(row[col])
            if v is not None and v not in out:
                out.append(v)
        return out or None

    tx = tx.assign(item_id=tx["article_id"].map(article_key), user_id=tx["customer_id"].astype(str))
    try:
        day = pd.to_datetime(tx["t_dat"], format="%Y-%m-%d", utc=True)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{folder / TRANSACTIONS}: t_dat must be YYYY-MM-DD dates ({e}).") from e
    tx["timestamp"] = (day - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    tx["timestamp"] = tx["timestamp"].astype(np.int64)
    if "price" not in tx.columns:
        tx["price"] = np.nan
    tx["_order"] = np.arange(len(tx))
    grouped = (
        tx.groupby(["user_id", "item_id", "timestamp"], sort=False)
        .agg(price=("price", "mean"), quantity=("price", "size"), _order=("_order", "min"))
        .reset_index()
        .sort_values("_order", kind="stable")
        .drop(columns="_order")
    )
    merged = len(tx) - len(grouped)
    dups = tx.loc[tx.duplicated(["user_id", "item_id", "timestamp"], keep="first")]
    for u, i, d in dups[["user_id", "item_id", "t_dat"]].itertuples(index=False):
        ctx.report.add(
            "duplicate purchases merged (same customer, article and day)",
            f"customer {u[:12]}... article {i} on {d}",
        )
    interactions = grouped[["user_id", "item_id", "timestamp", "price", "quantity"]].reset_index(drop=True)

    price = tx.groupby("item_id")["price"].median()
    table = pd.DataFrame(
        {
            "item_id": art["item_id"],
            "title": art["prod_name"].map(clean_text),
            "description": art["detail_desc"].map(clean_text),
            "categories": art.apply(cats, axis=1),
            "price": art["item_id"].map(price),
            "image": art["item_id"].map(image_path),
        }
    )
    for col in _EXTRA:
        if col in art.columns:
            table[col] = art[col].to_numpy()
    table = restrict_items(table, interactions, items)
    return Converted(
        items=table.reset_index(drop=True),
        interactions=interactions,
        source_files=[str(folder / ARTICLES), str(folder / TRANSACTIONS), str(images)],
        extra_meta={
            "hm": {"images": int(table["image"].notna().sum()), "merged_duplicate_purchases": int(merged)}
        },
    )
