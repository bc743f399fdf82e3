"""The canonical dataset format (DESIGN §3): ``items.parquet``, ``interactions.parquet``, ``dataset.json``.

Every converter produces this format and every DataModule reads it. Writing is atomic: the dataset is
written into a temporary sibling folder which is renamed into place only when complete, and an existing
dataset is never replaced unless ``overwrite=True``.

Example:
    >>> import pandas as pd, tempfile, pathlib
    >>> items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
    >>> inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "toy"
    >>> ds = write_dataset(out, items, inter, name="toy", source_format="python")
    >>> ds.counts
    {'users': 1, 'items': 2, 'interactions': 2}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmrec import __version__

FORMAT_VERSION = 1
MEDIA_COLUMNS: tuple[str, ...] = ("image", "audio", "video")
ITEM_TEXT_COLUMNS: tuple[str, ...] = ("title", "description", "brand")
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "categories",
    "brand",
    "price",
    *MEDIA_COLUMNS,
)
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp", "rating")
OPTIONAL_INTERACTION_COLUMNS: tuple[str, ...] = ("review", "explanation", "split")
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("image", pa.string()),
        ("audio", pa.string()),
        ("video", pa.string()),
    ]
)
INTERACTION_TYPES = {
    "user_id": pa.string(),
    "item_id": pa.string(),
    "timestamp": pa.int64(),
    "rating": pa.float32(),
    "review": pa.string(),
    "explanation": pa.string(),
    "split": pa.int8(),
}


class DatasetError(ValueError):
    """Raised when a dataset is malformed, missing or would be overwritten."""


@dataclass
class ConversionReport:
    """What a converter skipped or repaired, kept in ``dataset.json`` so nothing is lost silently.

    Attributes:
        skipped: reason -> number of skipped records.
        examples: reason -> up to five examples (``file:line: detail``).
    """

    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        """Count one skipped record under ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(example)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "examples": {k: list(v) for k, v in self.examples.items()}}

    def summary(self) -> str:
        if not self.skipped:
            return "nothing skipped"
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))


@dataclass
class CanonicalDataset:
    """A canonical dataset loaded in memory.

    Attributes:
        path: the dataset folder.
        items: one row per item, in the dataset's item order (the order every store aligns to).
        interactions: one row per interaction, sorted by user then time (stable).
        meta: the content of ``dataset.json``.
    """

    path: Path
    items: pd.DataFrame
    interactions: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CanonicalDataset:
        """Read a canonical dataset folder.

        Args:
            path: folder holding ``items.parquet``, ``interactions.parquet`` and ``dataset.json``.
        """
        root = Path(path).expanduser().resolve()
        meta = read_meta(root)
        items = pq.read_table(root / "items.parquet").to_pandas()
        interactions = pq.read_table(root / "interactions.parquet").to_pandas()
        return cls(path=root, items=items, interactions=interactions, meta=meta)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.meta["counts"])

    @property
    def item_ids(self) -> list[str]:
        """Item ids in the dataset's item order."""
        return self.items["item_id"].tolist()

    def has_column(self, column: str) -> bool:
        """Whether ``column`` exists with at least one non-null value (items or interactions)."""
        cols = self.meta.get("columns", {})
        return column in cols.get("items", []) or column in cols.get("interactions", [])

    def resolve_media(self, value: str | None) -> str | None:
        """Turn a media cell into an absolute path (or return a URL unchanged).

        Relative paths are resolved inside the dataset folder; a path escaping it (``../``) is refused.
        """
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if "://" in value:
            return value
        p = Path(value)
        if p.is_absolute():
            return str(p)
        full = (self.path / p).resolve()
        if self.path not in full.parents and full != self.path:
            raise DatasetError(
                f"media path {value!r} escapes the dataset folder {self.path}; refusing to read it."
            )
        return str(full)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``dataset.json`` of a canonical dataset, with an actionable error when it is missing."""
    root = Path(path).expanduser()
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        hint = (
            "Create it with `mmrec data prepare <format> <raw files> --out " + str(root) + "` "
            "(formats: `mmrec data prepare --help`) or `mmrec data synth --out " + str(root) + "`."
        )
        if root.exists():
            raise DatasetError(f"{root} is not a canonical dataset (no dataset.json). {hint}")
        raise DatasetError(f"dataset folder {root} does not exist. {hint}")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(
            f"{meta_path} has format_version {meta['format_version']}, newer than this mmrec understands "
            f"({FORMAT_VERSION}); upgrade mmrec."
        )
    return meta


def _null_if_empty(series: pd.Series) -> pd.Series:
    """Strings that are empty or whitespace stand for null in the canonical format."""
    s = series.astype("object")
    mask = s.map(lambda v: isinstance(v, str) and not v.strip())
    return s.where(~mask, None)


def _normalise_items(items: pd.DataFrame) -> pd.DataFrame:
    if "item_id" not in items.columns:
        raise DatasetError("items table has no 'item_id' column.")
    out = items.copy()
    out["item_id"] = out["item_id"].astype(str)
    for col in ITEM_COLUMNS:
        if col not in out.columns:
            out[col] = None
    for col in ("title", "description", "brand", *MEDIA_COLUMNS):
        out[col] = _null_if_empty(out[col].where(out[col].notna(), None))

    def _cats(v: Any) -> list[str] | None:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, str):
            return [v] if v.strip() else None
        vals = [str(x) for x in list(v) if x is not None and str(x).strip()]
        return vals or None

    out["categories"] = out["categories"].map(_cats)
    out["price"] = pd.to_numeric(out["price"], errors="coerce")
    extra = [c for c in out.columns if c not in ITEM_COLUMNS]
    return out[[*ITEM_COLUMNS, *extra]].reset_index(drop=True)


def _normalise_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in inter.columns]
    if missing:
        raise DatasetError(f"interactions table lacks column(s) {missing}.")
    out = inter.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    out["timestamp"] = pd.to_numeric(out["timestamp"], errors="raise").astype("int64")
    if "rating" not in out.columns:
        out["rating"] = np.nan
    out["rating"] = pd.to_numeric(out["rating"], errors="coerce").astype("float32")
    for col in ("review", "explanation"):
        if col in out.columns:
            out[col] = _null_if_empty(out[col].where(out[col].notna(), None))
    if "split" in out.columns:
        bad = ~out["split"].isin(list(SPLIT_CODES.values()))
        if bad.any():
            raise DatasetError(
                f"interactions 'split' must be 0 (train), 1 (valid) or 2 (test); got {out.loc[bad, 'split'].unique()[:5]}."
            )
        out["split"] = out["split"].astype("int8")
    # Stable sort: ties in time keep the source order, which is the only order some formats have.
    out["_order"] = np.arange(len(out))
    out = out.sort_values(["user_id", "timestamp", "_order"], kind="stable").drop(columns="_order")
    cols = [*INTERACTION_COLUMNS, *[c for c in OPTIONAL_INTERACTION_COLUMNS if c in out.columns]]
    extra = [c for c in out.columns if c not in cols]
    return out[cols + extra].reset_index(drop=True)


def validate_tables(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    skip_bad: bool = False,
    report: ConversionReport | None = None,
    source: str = "input",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check the invariants of the canonical format; drop and count offenders when ``skip_bad``.

    Checks: non-empty tables, unique item ids, interactions referring only to known items, no duplicate
    interaction rows (same user, item and timestamp).

    Raises:
        DatasetError: naming the problem, how many rows it affects, examples, and ``--skip_bad``.
    """
    report = report if report is not None else ConversionReport()
    if len(items) == 0:
        raise DatasetError(
            f"{source}: no items were read; the dataset would be empty. Check the input files."
        )
    if len(interactions) == 0:
        raise DatasetError(
            f"{source}: no interactions were read; the dataset would be empty. Check the input files."
        )

    dup_items = items["item_id"].duplicated(keep="first")
    if dup_items.any():
        ex = items.loc[dup_items, "item_id"].head(5).tolist()
        if not skip_bad:
            raise DatasetError(
                f"{source}: {int(dup_items.sum())} duplicate item id(s) in the item table, e.g. {ex}. "
                "Fix the input or pass --skip_bad to keep the first row of each."
            )
        for v in items.loc[dup_items, "item_id"]:
            report.add("duplicate item rows", f"item {v}")
        items = items.loc[~dup_items]

    known = set(items["item_id"])
    unknown = ~interactions["item_id"].isin(known)
    if unknown.any():
        ex = interactions.loc[unknown, "item_id"].head(5).tolist()
        if not skip_bad:
            raise DatasetError(
                f"{source}: {int(unknown.sum())} interaction(s) refer to item ids missing from the item table, "
                f"e.g. {ex}. Fix the input or pass --skip_bad to drop them."
            )
        for v in interactions.loc[unknown, "item_id"]:
            report.add("interactions with unknown items", f"item {v}")
        interactions = interactions.loc[~unknown]

    dup_rows = interactions.duplicated(subset=["user_id", "item_id", "timestamp"], keep="first")
    if dup_rows.any():
        ex = interactions.loc[dup_rows, ["user_id", "item_id", "timestamp"]].head(3).values.tolist()
        if not skip_bad:
            raise DatasetError(
                f"{source}: {int(dup_rows.sum())} duplicate interaction row(s) (same user, item and timestamp), "
                f"e.g. {ex}. Fix the input or pass --skip_bad to keep the first of each."
            )
        for u, i, t in interactions.loc[dup_rows, ["user_id", "item_id", "timestamp"]].values.tolist():
            report.add("duplicate interactions", f"user {u} item {i} t={t}")
        interactions = interactions.loc[~dup_rows]
    if len(interactions) == 0:
        raise DatasetError(f"{source}: every interaction was dropped as bad; the dataset would be empty.")
    return items, interactions


def _hash_frame(df: pd.DataFrame) -> bytes:
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(df[c].dtype)] for c in df.columns]).encode())
    for col in df.columns:
        values = df[col]
        if values.dtype == object and values.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            # list cells (categories) have no vectorised hash: serialise just those columns
            values = values.map(
                lambda v: json.dumps(list(v)) if isinstance(v, (list, tuple, np.ndarray)) else v
            )
        h.update(pd.util.hash_pandas_object(values, index=False).values.tobytes())
    return h.digest()


def content_fingerprint(items: pd.DataFrame, interactions: pd.DataFrame) -> str:
    """sha256 over the normalised tables' content (column names and values, in order)."""
    h = hashlib.sha256()
    h.update(_hash_frame(items))
    h.update(_hash_frame(interactions))
    return h.hexdigest()


def _non_null_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if df[c].notna().any()]


def write_dataset(
    out_dir: str | os.PathLike[str],
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    name: str,
    source_format: str,
    source_files: Sequence[str] = (),
    overwrite: bool = False,
    skip_bad: bool = False,
    report: ConversionReport | None = None,
    extra_meta: dict[str, Any] | None = None,
    media_dirs: Sequence[str] = (),
) -> CanonicalDataset:
    """Validate, normalise and atomically write a canonical dataset.

    Args:
        out_dir: destination folder; must not exist unless ``overwrite``.
        items: item table (``item_id`` required; other canonical columns optional, extras kept).
        interactions: ``user_id``, ``item_id``, ``timestamp`` required; ``rating``, ``review``,
            ``explanation``, ``split`` optional.
        name: dataset name stored in ``dataset.json``.
        source_format: the converter that produced it (``amazon2014``, ``movielens``...).
        source_files: input files, recorded for provenance.
        overwrite: replace an existing dataset folder.
        skip_bad: drop (and count) unknown-item interactions and duplicates instead of failing.
        report: the converter's report of skipped input lines, merged into ``dataset.json``.
        extra_meta: more keys for ``dataset.json`` (e.g. ``{"timestamps": "sequence-order"}``).
        media_dirs: sub-folders of a staging folder to move into the dataset (used by generators that
            write media first); each must already live inside ``out_dir``'s temporary sibling.

    Returns:
        The written dataset, loaded.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass --overwrite to replace it (nothing was written).")
    report = report if report is not None else ConversionReport()
    items = _normalise_items(items)
    interactions = _normalise_interactions(interactions)
    items, interactions = validate_tables(items, interactions, skip_bad=skip_bad, report=report, source=name)

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source_format": source_format,
        "source_files": [str(s) for s in source_files],
        "counts": {
            "users": int(interactions["user_id"].nunique()),
            "items": len(items),
            "interactions": len(interactions),
        },
        "columns": {"items": _non_null_columns(items), "interactions": _non_null_columns(interactions)},
        "split": "given" if "split" in interactions.columns else "leave-one-out",
        "fingerprint": content_fingerprint(items, interactions),
        "conversion_report": report.to_dict(),
        "created_by": f"mmrec {__version__}",
    }
    if extra_meta:
        meta.update(extra_meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        table = pa.Table.from_pandas(items, preserve_index=False)
        table = table.cast(_items_schema(table.schema))
        pq.write_table(table, tmp / "items.parquet")
        itab = pa.Table.from_pandas(interactions, preserve_index=False)
        itab = itab.cast(
            pa.schema([pa.field(f.name, INTERACTION_TYPES.get(f.name, f.type)) for f in itab.schema])
        )
        pq.write_table(itab, tmp / "interactions.parquet")
        with open(tmp / "dataset.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=False)
            f.write("\n")
        for d in media_dirs:
            src = Path(d)
            shutil.move(str(src), str(tmp / src.name))
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CanonicalDataset.load(out)


def _items_schema(actual: pa.Schema) -> pa.Schema:
    fields = []
    for f in actual:
        if f.name in ITEM_SCHEMA.names:
            fields.append(ITEM_SCHEMA.field(f.name))
        else:
            fields.append(f)
    return pa.schema(fields)
