"""Where ``mmrec embed`` reads items from: a canonical dataset folder or webdataset tar shards.

Both sources expose the same small interface (:class:`ItemSource`): ``item_ids`` in order (the order the
store aligns to), a cheap ``input_fingerprint`` and ``load(index, columns, modality)`` returning the raw
item (``PIL.Image``, :class:`~mmrec.encoders.base.AudioClip`, :class:`~mmrec.encoders.base.VideoClip` or
``str``) decoded by :func:`mmrec.encoders.media.decode`. A null media cell raises :class:`MissingValue`;
a broken one raises :class:`~mmrec.encoders.media.MediaError` with a ``reason``.

Shards (``mmrec shard``) are plain, deterministic tar files in webdataset layout: for each item, in
dataset order, ``<key>.json`` (``item_id``, text fields, which member holds which media column, and why a
media column is absent) followed by ``<key>.<ext>`` for each media column. Keys are safe names
(``00000042-item_id``: letters, digits, ``_`` and ``-``). Member names are validated when read: absolute
names, ``..`` components, backslashes and anything that is not a regular file are refused.

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> from mmrec.data.canonical import write_dataset
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ds = write_dataset(d / "ds", pd.DataFrame({"item_id": ["a", "b"], "title": ["Red", None]}),
    ...                    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}),
    ...                    name="toy", source_format="python")
    >>> src = DatasetSource(ds.path)
    >>> src.item_ids, src.load(0, ["title"], "text")
    (['a', 'b'], ('Red', 'items.parquet[a].title'))
    >>> paths = write_shards(ds.path, d / "shards", columns=[], max_count=1)
    >>> [p.name for p in paths]
    ['media-000000.tar', 'media-000001.tar']
    >>> ShardSource(str(d / "shards")).load(0, ["title"], "text")[0]
    'Red'
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from mmrec.data.canonical import MEDIA_COLUMNS, CanonicalDataset, DatasetError, read_meta
from mmrec.encoders.media import MediaError, decode, load_text

SHARD_PATTERN = "media-{:06d}.tar"
TEXT_FIELDS: tuple[str, ...] = ("title", "description", "brand")
# members tried, in order, for shards not written by `mmrec shard` (no media map in the JSON)
DEFAULT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "image"),
    "audio": ("wav", "flac", "mp3", "ogg", "m4a", "opus", "audio"),
    "video": ("mp4", "webm", "mkv", "avi", "mov", "video"),
}
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ShardError(ValueError):
    """A shard file is missing, malformed or unsafe (the message names the file and member)."""


class MissingValue(Exception):
    """The item has no value in this column (a null cell): recorded as ``missing value``, not a failure."""

    reason = "missing value"


class ItemSource(Protocol):
    """What the embedding pipeline needs from an input."""

    @property
    def item_ids(self) -> list[str]: ...

    def input_fingerprint(self, hashes: Any, columns: Sequence[str] = (), modality: str = "text") -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def check_columns(self, columns: Sequence[str], modality: str) -> None: ...

    def load(
        self, index: int, columns: Sequence[str], modality: str, **decode_args: Any
    ) -> tuple[Any, str]: ...


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def join_text(parts: Sequence[Any]) -> str:
    """Join text fields with ``". "``, skipping nulls and blanks; raises ``MediaError("empty text")``.

    Example:
        >>> join_text(["Red dress", None, "  cotton  "])
        'Red dress. cotton'
    """
    texts = [str(p).strip() for p in parts if not _is_null(p) and str(p).strip()]
    return load_text(". ".join(texts)) if texts else load_text(None)


# ============================================================================ canonical dataset
class DatasetSource:
    """Items of a canonical dataset, in ``items.parquet`` order.

    Only ``dataset.json`` is read on construction (the fingerprint is all a cache hit needs); the item
    table is loaded on first use.

    Args:
        path: the dataset folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.meta = read_meta(self.path)
        self._ds: CanonicalDataset | None = None

    @property
    def dataset(self) -> CanonicalDataset:
        if self._ds is None:
            self._ds = CanonicalDataset.load(self.path)
        return self._ds

    @property
    def item_ids(self) -> list[str]:
        return self.dataset.item_ids

    def input_fingerprint(
        self, hashes: Any = None, columns: Sequence[str] = (), modality: str = "text"
    ) -> str:
        """``dataset:<content fingerprint from dataset.json>`` (columns are added by the caller).

        For media columns, the size and modification time of every referenced local file are hashed in
        too (a ``stat`` per file, no reading), so replacing a photo under the same path gives a new store.
        """
        fp = self.meta.get("fingerprint")
        if not fp:
            raise DatasetError(
                f"{self.path}/dataset.json has no fingerprint; rewrite the dataset with mmrec."
            )
        if modality == "text" or not columns:
            return f"dataset:{fp}"
        h = hashlib.sha256()
        for value in self.dataset.items[columns[0]].tolist():
            if _is_null(value) or "://" in str(value):
                h.update(b"-\n")
                continue
            try:
                st = os.stat(self.dataset.resolve_media(str(value)) or "")
                h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
            except (OSError, DatasetError):
                h.update(b"missing\n")
        return f"dataset:{fp}|media:{h.hexdigest()[:16]}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "path": str(self.path),
            "name": self.meta.get("name"),
            "fingerprint": self.meta.get("fingerprint"),
        }

    def check_columns(self, columns: Sequence[str], modality: str) -> None:
        """Raise a :class:`DatasetError` naming the available columns when one is absent."""
        have = list(self.dataset.items.columns)
        missing = [c for c in columns if c not in have]
        if missing:
            raise DatasetError(
                f"dataset {self.path} has no item column(s) {missing}; its columns are {have}. "
                "Fix `column:` in the recipe."
            )

    def load(self, index: int, columns: Sequence[str], modality: str, **decode_args: Any) -> tuple[Any, str]:
        """Raw item ``index`` and a description of where it came from.

        Raises:
            MissingValue: null media cell.
            MediaError: missing / corrupt media, empty text.
        """
        items = self.dataset.items
        key = str(items["item_id"].iat[index])
        if modality == "text":
            origin = f"items.parquet[{key}].{'+'.join(columns)}"
            return join_text([items[c].iat[index] for c in columns]), origin
        value = items[columns[0]].iat[index]
        if _is_null(value):
            raise MissingValue()
        try:
            path = self.dataset.resolve_media(str(value))
        except DatasetError as e:
            raise MediaError("bad source", str(e)) from e
        assert path is not None
        if "://" in path:
            raise MediaError(
                "remote media", f"{path} is a URL; download the media and store local paths first"
            )
        return decode(modality, path, **decode_args), path


# ============================================================================ tar shards
def safe_key(index: int, item_id: str) -> str:
    """A webdataset-safe sample key: ``<8-digit index>-<item id with unsafe characters replaced>``.

    Example:
        >>> safe_key(7, "../a b.jpg")
        '00000007-a_b_jpg'
    """
    cleaned = _SAFE.sub("_", item_id).strip("_")[:48]
    return f"{index:08d}-{cleaned}" if cleaned else f"{index:08d}"


def check_member_name(name: str, shard: str | os.PathLike[str]) -> None:
    """Refuse tar member names that could escape a folder or are not plain relative names.

    Raises:
        ShardError: absolute names, ``..`` components, backslashes, NUL bytes or empty names.

    Example:
        >>> check_member_name("00000001-a.json", "s.tar")
        >>> check_member_name("../etc/passwd", "s.tar")
        Traceback (most recent call last):
        ...
        mmrec.embedding.sources.ShardError: s.tar: unsafe member name '../etc/passwd' (absolute paths and '..' are refused); rebuild the shard with `mmrec shard`.
    """
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(p == ".." for p in parts)
    ):
        raise ShardError(
            f"{shard}: unsafe member name {name!r} (absolute paths and '..' are refused); rebuild the shard with "
            "`mmrec shard`."
        )


def expand_shards(spec: str | Sequence[str]) -> list[Path]:
    """Shard files named by a brace pattern, a glob, a folder (its ``*.tar``) or a list of these.

    Example:
        >>> [str(p) for p in expand_shards("/nonexistent/media-{000000..000001}.tar")]
        Traceback (most recent call last):
        ...
        mmrec.embedding.sources.ShardError: shard file /nonexistent/media-000000.tar does not exist; write shards with `mmrec shard --dataset D --out DIR` or fix `shards:`.
    """
    from braceexpand import braceexpand

    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[Path] = []
    for s in specs:
        for name in braceexpand(str(s)):
            p = Path(name).expanduser()
            if p.is_dir():
                found = sorted(p.glob("*.tar"))
                if not found:
                    raise ShardError(f"shard folder {p} holds no .tar files; write some with `mmrec shard`.")
                out.extend(found)
            elif any(ch in name for ch in "*?["):
                found = sorted(Path(g) for g in glob.glob(str(p)))
                if not found:
                    raise ShardError(f"shard pattern {name!r} matches no file; fix `shards:`.")
                out.extend(found)
            elif p.is_file():
                out.append(p)
            else:
                raise ShardError(
                    f"shard file {p} does not exist; write shards with `mmrec shard --dataset D --out DIR` or fix `shards:`."
                )
    if not out:
        raise ShardError(f"`shards: {spec!r}` names no file.")
    resolved = [p.resolve() for p in out]
    if len(set(resolved)) != len(resolved):
        raise ShardError(f"`shards: {spec!r}` names the same file twice.")
    return resolved


@dataclass
class ShardItem:
    """One sample of a shard: its key, metadata and where each member's bytes are."""

    key: str
    shard: int
    meta: dict[str, Any] = field(default_factory=dict)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # ext -> (offset, size)


class ShardSource:
    """Items of webdataset tar shards, in shard order (the order the store aligns to).

    The index (which member is where) is built on first use by reading the tar headers and the small
    ``.json`` members; media bytes are read on demand with ``os.pread``, so items are random-access.

    Args:
        spec: shard files (see :func:`expand_shards`).
    """

    def __init__(self, spec: str | Sequence[str]) -> None:
        self.spec = spec
        self.paths = expand_shards(spec)
        self._items: list[ShardItem] | None = None
        self._fds: dict[tuple[int, int], int] = {}

    # -------------------------------------------------------------- index
    @property
    def items(self) -> list[ShardItem]:
        if self._items is None:
            self._items = self._build_index()
        return self._items

    def _build_index(self) -> list[ShardItem]:
        items: list[ShardItem] = []
        seen_keys: dict[str, str] = {}
        for s, path in enumerate(self.paths):
            by_key: dict[str, ShardItem] = {}
            try:
                tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the `with tar` below)
            except (tarfile.TarError, OSError) as e:
                raise ShardError(
                    f"{path} is not a readable (uncompressed) tar file ({e}); rebuild it with `mmrec shard`."
                ) from e
            with tar:
                for member in tar:
                    check_member_name(member.name, path)
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise ShardError(
                            f"{path}: member {member.name!r} is a link or special file; only regular files are allowed."
                        )
                    base = PurePosixPath(member.name)
                    stem, dot, ext = base.name.partition(".")
                    if not dot or not stem:
                        raise ShardError(f"{path}: member {member.name!r} is not named <key>.<ext>.")
                    key = str(base.parent / stem) if str(base.parent) != "." else stem
                    item = by_key.get(key)
                    if item is None:
                        if key in seen_keys:
                            raise ShardError(
                                f"{path}: sample key {key!r} also appears in {seen_keys[key]}; keys must be unique."
                            )
                        seen_keys[key] = str(path)
                        item = by_key[key] = ShardItem(key=key, shard=s)
                        items.append(item)
                    if ext in item.members:
                        raise ShardError(f"{path}: sample {key!r} has two {ext!r} members.")
                    item.members[ext] = (member.offset_data, member.size)
                    if ext == "json":
                        fh = tar.extractfile(member)
                        assert fh is not None
                        try:
                            meta = json.loads(fh.read().decode("utf-8"))
                        except (ValueError, UnicodeDecodeError) as e:
                            raise ShardError(f"{path}: {member.name} is not valid UTF-8 JSON ({e}).") from e
                        if not isinstance(meta, dict):
                            raise ShardError(f"{path}: {member.name} must hold a JSON object.")
                        item.meta = meta
        if not items:
            raise ShardError(f"shards {self.spec!r} hold no samples.")
        ids = [self._item_id(it) for it in items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ShardError(f"shards {self.spec!r} hold duplicate item ids, e.g. {dup}.")
        return items

    @staticmethod
    def _item_id(item: ShardItem) -> str:
        value = item.meta.get("item_id", item.key)
        return str(value)

    @property
    def item_ids(self) -> list[str]:
        return [self._item_id(it) for it in self.items]

    # -------------------------------------------------------------- fingerprint / description
    def input_fingerprint(self, hashes: Any, columns: Sequence[str] = (), modality: str = "text") -> str:
        """``shards:<sha256 over the sha256 of each shard file, in order>`` (file hashes are cached)."""
        h = hashlib.sha256()
        for p in self.paths:
            h.update(hashes.sha256(p).encode())
            h.update(b"\n")
        return f"shards:{h.hexdigest()}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "shards",
            "spec": self.spec if isinstance(self.spec, str) else list(self.spec),
            "files": [str(p) for p in self.paths],
        }

    def check_columns(self, columns: Sequence[str], modality: str) -> None:
        """Shards carry no schema: a column absent from every sample is reported per item."""

    # -------------------------------------------------------------- reading
    def _read(self, item: ShardItem, ext: str) -> bytes:
        offset, size = item.members[ext]
        slot = (os.getpid(), item.shard)
        fd = self._fds.get(slot)
        if fd is None:
            fd = os.open(self.paths[item.shard], os.O_RDONLY)
            self._fds[slot] = fd
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise MediaError(
                "truncated shard", f"{self.paths[item.shard]} ends inside member {item.key}.{ext}"
            )
        return data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def load(self, index: int, columns: Sequence[str], modality: str, **decode_args: Any) -> tuple[Any, str]:
        """Raw item ``index`` and ``<shard>:<key>.<ext>`` describing where it came from.

        Raises:
            MissingValue: the item had no value in the column when the shard was written.
            MediaError: the member is absent, corrupt, or the text is empty.
        """
        item = self.items[index]
        where = f"{self.paths[item.shard].name}:{item.key}"
        if modality == "text":
            texts = item.meta.get("text", {})
            parts: list[Any] = []
            for c in columns:
                if c in texts:
                    parts.append(texts[c])
                elif c in item.members:
                    parts.append(self._read(item, c).decode("utf-8", errors="strict"))
                elif "txt" in item.members and len(columns) == 1:
                    parts.append(self._read(item, "txt").decode("utf-8", errors="strict"))
            return join_text(parts), f"{where}.json"
        col = columns[0]
        absent = item.meta.get("missing", {}).get(col)
        if absent == MissingValue.reason:
            raise MissingValue()
        if absent:
            raise MediaError(str(absent), f"{where}: {col} was {absent} when the shard was written")
        ext = item.meta.get("media", {}).get(col)
        if ext is None:
            ext = next((e for e in (col, *DEFAULT_EXTENSIONS.get(modality, ())) if e in item.members), None)
        if ext is None or ext not in item.members:
            raise MediaError(
                "missing file", f"{where} has no member for column {col!r} (members: {sorted(item.members)})"
            )
        return decode(modality, self._read(item, ext), **decode_args), f"{where}.{ext}"

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def open_source(
    dataset: str | os.PathLike[str] | None, shards: str | Sequence[str] | None
) -> DatasetSource | ShardSource:
    """The source named by a recipe (exactly one of ``dataset`` / ``shards``)."""
    if dataset is not None:
        return DatasetSource(dataset)
    if shards is not None:
        return ShardSource(shards)
    raise ValueError("give a dataset folder or shards")


# ============================================================================ writing shards
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
                        if not _is_null(v):
                            meta["text"][c] = str(v)
                    blobs: list[tuple[str, bytes]] = []
                    used_ext: set[str] = {"json"}
                    for c in columns:
                        value = items[c].iat[i]
                        reason = None
                        data = b""
                        if _is_null(value):
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
