"""Part files of an embedding store being built: the unit of work, of resume and of distribution.

The input is cut into chunks. For a canonical dataset, chunk ``k`` holds the ``shard_size`` consecutive items
``[k*S, (k+1)*S)``; for webdataset shards, chunk ``k`` is shard ``k``, whatever it holds (its size is known
only once it has been read). Each chunk, once encoded, becomes three files in its ``.partial`` folder
(``<cache>/<name>/<fingerprint>.partial/``, or ``<parts_dir>/<name>/<fingerprint>.partial/`` when the recipe
sends parts elsewhere):

- ``part-{k:05d}.npy``: ``(n, dim)`` rows in the store dtype (zeros where the item failed or is missing);
- ``part-{k:05d}.json``: keys, per-item status (``ok`` / ``missing`` / ``failed``), failure reasons and
  sources, timings;
- ``part-{k:05d}.done``: written last; holds the sha256 of the ``.npy`` and ``.json`` files.

Every file is written to a temporary name, flushed and renamed, and the ``.done`` marker is renamed into
place only after both others. A part without a ``.done`` marker (or whose checksums do not match) is
never read: it is redone. ``plan.json`` records the chunking (``shard_size``, item count, a digest of the
keys or of the shard names); if it changed, old parts are discarded.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "x.partial"
    >>> plan = PartPlan(d, num_items=5, shard_size=2, keys_digest="k")
    >>> plan.num_chunks, plan.chunk_range(2)
    (3, (4, 5))
    >>> plan.prepare()
    [0, 1, 2]
    >>> write_part(d, 1, np.ones((2, 3), np.float16), {"keys": ["c", "d"]})
    >>> plan.prepare(), read_part(d, 1)[1]["keys"]
    ([0, 2], ['c', 'd'])
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PLAN_FILE = "plan.json"


class PartError(RuntimeError):
    """A part file is missing or inconsistent at merge time."""


def part_name(k: int) -> str:
    """``part-00042`` for chunk 42."""
    return f"part-{k:05d}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_part(
    partial_dir: str | os.PathLike[str], k: int, vectors: np.ndarray, meta: dict[str, Any]
) -> None:
    """Write chunk ``k``'s rows and metadata, then its ``.done`` marker (each atomically, marker last).

    Args:
        partial_dir: the ``<fingerprint>.partial`` folder.
        k: chunk index.
        vectors: ``(n, dim)`` array in the store dtype.
        meta: JSON-serialisable metadata (``keys``, ``status``, ``reasons``, timings...).
    """
    d = Path(partial_dir)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors), allow_pickle=False)
    npy = buf.getvalue()
    js = json.dumps(meta, sort_keys=True, default=str).encode("utf-8")
    name = part_name(k)
    _atomic_write(d / f"{name}.npy", npy)
    _atomic_write(d / f"{name}.json", js)
    marker = {
        "chunk": k,
        "rows": int(vectors.shape[0]),
        "npy_sha256": hashlib.sha256(npy).hexdigest(),
        "json_sha256": hashlib.sha256(js).hexdigest(),
    }
    _atomic_write(d / f"{name}.done", json.dumps(marker, sort_keys=True).encode("utf-8"))


def read_part(partial_dir: str | os.PathLike[str], k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows and metadata of a *done* chunk, checked against its marker's checksums.

    Raises:
        PartError: no ``.done`` marker, or a file whose checksum differs from the marker's.
    """
    d = Path(partial_dir)
    name = part_name(k)
    try:
        marker = json.loads((d / f"{name}.done").read_text(encoding="utf-8"))
        npy = (d / f"{name}.npy").read_bytes()
        js = (d / f"{name}.json").read_bytes()
    except (OSError, ValueError) as e:
        raise PartError(f"{d}/{name}: not complete ({e}); run `mmrec embed` again to redo it.") from e
    if hashlib.sha256(npy).hexdigest() != marker.get("npy_sha256") or hashlib.sha256(
        js
    ).hexdigest() != marker.get("json_sha256"):
        raise PartError(
            f"{d}/{name}: checksum mismatch with its .done marker; delete {name}.done and run again."
        )
    vectors = np.load(io.BytesIO(npy), allow_pickle=False)
    return vectors, json.loads(js.decode("utf-8"))


def is_done(partial_dir: str | os.PathLike[str], k: int) -> bool:
    """Whether chunk ``k`` has a ``.done`` marker whose checksums match its files."""
    try:
        read_part(partial_dir, k)
    except PartError:
        return False
    return True


@dataclass
class PartPlan:
    """The chunking of one store build.

    Args:
        partial_dir: ``<cache>/<name>/<fingerprint>.partial`` (or the same under ``parts_dir``).
        num_items: number of input items (``None`` for shards: unknown until they are read).
        shard_size: items per chunk of a dataset (unused for shards).
        keys_digest: digest of the item keys in order, or of the shard names (guards against a changed input).
        shards: the shard names, one chunk each (``None`` for a dataset).
    """

    partial_dir: Path
    num_items: int | None
    shard_size: int
    keys_digest: str
    shards: list[str] | None = None

    @property
    def sized(self) -> bool:
        """Whether chunk sizes are known in advance (a dataset) rather than found by reading (shards)."""
        return self.shards is None

    @property
    def num_chunks(self) -> int:
        if self.shards is not None:
            return len(self.shards)
        assert self.num_items is not None
        return (self.num_items + self.shard_size - 1) // self.shard_size

    def chunk_range(self, k: int) -> tuple[int, int]:
        """``(start, end)`` item indices of chunk ``k`` (datasets only)."""
        if self.num_items is None:
            raise ValueError("the items of a shard chunk are not known before the shard is read")
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.num_items)

    def chunk_size(self, k: int) -> int | None:
        """Items in chunk ``k``, or ``None`` when only reading the shard tells."""
        if not self.sized:
            return None
        start, end = self.chunk_range(k)
        return end - start

    def _plan_dict(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "shard_size": self.shard_size, "keys_digest": self.keys_digest}

    def matches(self) -> bool:
        """Whether ``partial_dir`` exists and was prepared for this very plan."""
        try:
            old = json.loads((Path(self.partial_dir) / PLAN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(old == self._plan_dict())

    def prepare(self) -> list[int]:
        """Create the folder (discarding parts of a different plan) and return the chunks still to do.

        Called by the one process that owns the folder first (rank 0, or each rank for a folder of its
        own); parts without a valid ``.done`` marker are reported as to do (they are overwritten when redone).
        """
        d = Path(self.partial_dir)
        if d.exists() and not self.matches():
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        plan_path = d / PLAN_FILE
        if not plan_path.exists():
            _atomic_write(plan_path, json.dumps(self._plan_dict(), sort_keys=True).encode("utf-8"))
        for stale in d.glob(".*.tmp-*"):  # temporaries of a killed run
            stale.unlink(missing_ok=True)
        return self.todo()

    def done(self) -> list[int]:
        """The chunks whose parts in ``partial_dir`` are complete (read-only; nothing when the folder was
        prepared for another plan)."""
        if not self.matches():
            return []
        d = Path(self.partial_dir)
        return [k for k in range(self.num_chunks) if (d / f"{part_name(k)}.done").is_file() and is_done(d, k)]

    def todo(self) -> list[int]:
        """The chunks without a complete part in ``partial_dir``."""
        done = set(self.done())
        return [k for k in range(self.num_chunks) if k not in done]


def find_part(dirs: list[Path], k: int) -> Path:
    """The folder (among ``dirs``) holding a complete part for chunk ``k``.

    The same chunk may be complete in several folders (a chunk redone after its first copy was moved); that
    is accepted when the copies hold the same rows and the same per-item outcomes.

    Raises:
        PartError: no folder holds it, or two hold different rows for it.
    """
    found = [d for d in dirs if (d / f"{part_name(k)}.done").is_file() and is_done(d, k)]
    if not found:
        raise PartError(
            f"no complete part for chunk {k} ({part_name(k)}) in {[str(d) for d in dirs]}; run `mmrec embed` "
            "again to compute it, or add the folder that holds it to --merge_from."
        )

    def content(d: Path) -> str:  # the rows and per-item outcomes, not the timings or the rank
        marker = json.loads((d / f"{part_name(k)}.done").read_text(encoding="utf-8"))
        meta = json.loads((d / f"{part_name(k)}.json").read_text(encoding="utf-8"))
        same = {f: meta.get(f) for f in ("keys", "status", "reasons")}
        return json.dumps([marker.get("npy_sha256"), same], sort_keys=True)

    if len({content(d) for d in found}) > 1:
        raise PartError(
            f"chunk {k} was computed twice with different results ({[str(d) for d in found]}); delete one "
            f"copy ({part_name(k)}.npy/.json/.done) and merge again."
        )
    return found[0]
