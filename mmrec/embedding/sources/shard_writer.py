"""Packing a canonical dataset's items into deterministic webdataset tar shards (``mmrec shard``).

For each item, in dataset order: ``<key>.json`` (``item_id``, ``index``, the text fields, ``media``: column
-> member extension, ``missing``: column -> why it is absent) followed by ``<key>.<ext>`` for each media
column. Keys are safe names (``00000042-item_id``: letters, digits, ``_`` and ``-``). Members carry fixed
metadata (mtime 0, uid 0), so the same dataset gives the same bytes.

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> from mmrec.data.canonical import write_dataset
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ds = write_dataset(d / "ds", pd.DataFrame({"item_id": ["a", "b"], "title": ["Red", None]}),
    ...                    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}),
    ...                    name="toy", source_format="python")
    >>> paths = write_shards(ds.path, d / "shards", columns=[], max_count=1)
    >>> [p.name for p in paths]
    ['media-000000.tar', 'media-000001.tar']
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrec.data.canonical import MEDIA_COLUMNS, CanonicalDataset, DatasetError
from mmrec.embedding.sources.base import MissingValue, ShardError, is_null

SHARD_PATTERN = "media-{:06d}.tar"
TEXT_FIELDS: tuple[str, ...] = ("title", "description", "brand")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(index: int, item_id: str) -> str:
    """A webdataset-safe sample key: ``<8-digit index>-<item id with unsafe characters replaced>``.

    Example:
        >>> safe_key(7, "../a b.jpg")
        '00000007-a_b_jpg'
    """
    cleaned = _SAFE.sub("_", item_id).strip("_")[:48]
    return f"{index:08d}-{cleaned}" if cleaned else f"{index:08d}"


@dataclass
class ShardReport:
    """What :func:`write_shards` wrote."""

    paths: list[Path]
    items: int
    bytes: int
    absent: dict[str, dict[str, int]]  # column -> reason -> count


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shards(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    max_count: int = 1000,
    overwrite: bool = False,
    report: list[ShardReport] | None = None,
) -> list[Path]:
    """Pack a canonical dataset's items into webdataset tar shards, deterministically.

    Each item, in dataset order, becomes ``<key>.json`` (``item_id``, ``index``, the text fields title /
    description / brand, ``media``: column -> member extension, ``missing``: column -> reason for a null
    cell or an unreadable file) followed by one ``<key>.<ext>`` member per media column holding the file's
    bytes. Members have fixed metadata (mtime 0, uid 0), so the same dataset gives the same bytes. Each
    shard is written to a temporary name and renamed when complete.

    Args:
        dataset: canonical dataset folder.
        out: output folder (created); shards are ``media-000000.tar``, ``media-000001.tar``...
        columns: media columns to pack (default: those of image / audio / video the dataset has).
        max_count: items per shard.
        overwrite: replace existing ``media-*.tar`` files in ``out``.
        report: if given, a :class:`ShardReport` is appended to it.

    Returns:
        The shard paths, in order.

    Example:
        >>> write_shards("assets/demo", "shards/demo", max_count=100)  # doctest: +SKIP
        [PosixPath('shards/demo/media-000000.tar'), PosixPath('shards/demo/media-000001.tar'), ...]
    """
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    ds = CanonicalDataset.load(dataset)
    items = ds.items
    if columns is None:
        columns = [c for c in MEDIA_COLUMNS if c in items.columns and items[c].notna().any()]
    missing_cols = [c for c in columns if c not in items.columns]
    if missing_cols:
        raise DatasetError(
            f"dataset {ds.path} has no column(s) {missing_cols}; its columns are {list(items.columns)}."
        )
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob("media-*.tar"))
    if existing and not overwrite:
        raise ShardError(
            f"{out_dir} already holds shards ({existing[0].name}...); pass --overwrite or choose another folder."
        )
    for p in existing:
        p.unlink()
    text_cols = [c for c in TEXT_FIELDS if c in items.columns]
    paths: list[Path] = []
    absent: dict[str, dict[str, int]] = {}
    total_bytes = 0
    n = len(items)
    for s, start in enumerate(range(0, n, max_count)):
        final = out_dir / SHARD_PATTERN.format(s)
        tmp = out_dir / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for i in range(start, min(start + max_count, n)):
                    item_id = str(items["item_id"].iat[i])
                    key = safe_key(i, item_id)
                    meta: dict[str, Any] = {
                        "item_id": item_id,
                        "index": i,
                        "text": {},
                        "media": {},
                        "missing": {},
                    }
                    for c in text_cols:
                        v = items[c].iat[i]
                        if not is_null(v):
                            meta["text"][c] = str(v)
                    blobs: list[tuple[str, bytes]] = []
                    used_ext: set[str] = {"json"}
                    for c in columns:
                        value = items[c].iat[i]
                        reason = None
                        data = b""
                        if is_null(value):
                            reason = MissingValue.reason
                        else:
                            try:
                                path = ds.resolve_media(str(value))
                            except DatasetError:
                                path, reason = None, "bad source"
                            if path is not None and "://" in path:
                                reason = "remote media"
                            elif path is not None:
                                try:
                                    data = Path(path).read_bytes()
                                except OSError:
                                    reason = "missing file"
                        if reason is not None:
                            meta["missing"][c] = reason
                            absent.setdefault(c, {}).setdefault(reason, 0)
                            absent[c][reason] += 1
                            continue
                        suffix = _SAFE.sub("", Path(str(value)).suffix.lstrip(".").lower()) or c
                        ext = suffix if suffix not in used_ext else f"{c}.{suffix}"
                        used_ext.add(ext)
                        meta["media"][c] = ext
                        blobs.append((ext, data))
                    payload = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
                    tar.addfile(_tarinfo(f"{key}.json", len(payload)), io.BytesIO(payload))
                    for ext, data in blobs:
                        tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        total_bytes += final.stat().st_size
        paths.append(final)
    if report is not None:
        report.append(ShardReport(paths=paths, items=n, bytes=total_bytes, absent=absent))
    return paths
