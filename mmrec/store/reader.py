"""Reading (and atomically writing whole) embedding stores (DESIGN §3).

A complete store is a folder holding:

- ``manifest.json``: written last, so its presence means the store is complete. Keys: ``format``
  (``"mmrec-embedding-store"``), ``version``, ``fingerprint``, ``encoder``, ``weights``, ``dim``,
  ``dtype``, ``count``, ``valid``, ``failures`` (item id -> reason), plus provenance and timings.
- ``embeddings.npy``: ``(num_items, dim)`` float16 or float32, memory-mapped on open.
- ``mask.npy``: ``(num_items,)`` bool, False where the item's input was missing or failed.
- ``keys.parquet``: one column ``item_id`` giving the row order.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "store"
    >>> s = write_store(root, ["a", "b"], np.eye(2, 3, dtype=np.float32), encoder="toy/identity")
    >>> s.dim, s.num_items, s.mask.tolist()
    (3, 2, [True, True])
    >>> vecs, mask = EmbeddingStore.open(root).aligned(["b", "zzz"])
    >>> vecs.shape, mask.tolist()
    (torch.Size([2, 3]), [True, False])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # torch is imported by the two methods that return tensors: `mmrec store` starts fast
    import torch

from mmrec import __version__

STORE_FORMAT = "mmrec-embedding-store"
STORE_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


class StoreError(ValueError):
    """Raised when an embedding store is missing, incomplete or inconsistent."""


def store_fingerprint(
    *,
    encoder: str,
    weights: str,
    preprocessing: Mapping[str, Any] | None = None,
    pooling: str | None = None,
    dtype: str = "float32",
    inputs: str,
) -> str:
    """Content address of a store: same encoder, weights, preprocessing, pooling, dtype and inputs give
    the same fingerprint (so nothing is recomputed); any change gives a new one.

    Args:
        encoder: registry name, e.g. ``"open_clip/ViT-B-32"``.
        weights: identity of the weights: ``sha256:<hex>`` of a file, ``hub:<tag>@<revision>``, or
            ``random-init:<seed>``.
        preprocessing: the preprocessing config (JSON-serialisable).
        pooling: pooling name (``"mean"``, ``"cls"``...).
        dtype: stored dtype.
        inputs: fingerprint of the input (dataset fingerprint + column, or shard listing).

    Returns:
        A 16-hex-digit prefix of the sha256 (folder name under the cache).
    """
    payload = json.dumps(
        {
            "encoder": encoder,
            "weights": weights,
            "preprocessing": preprocessing or {},
            "pooling": pooling,
            "dtype": dtype,
            "inputs": inputs,
            "store_version": STORE_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(repr=False)
class EmbeddingStore:
    """A complete embedding store opened for reading.

    Attributes:
        path: the store folder.
        manifest: content of ``manifest.json``.
        item_ids: row order of the matrix.
        vectors: ``(num_items, dim)`` array, memory-mapped (read-only) unless opened with ``mmap=False``.
        mask: ``(num_items,)`` bool; False rows hold zeros and must not be trusted.
    """

    path: Path
    manifest: dict[str, Any]
    item_ids: list[str]
    vectors: np.ndarray
    mask: np.ndarray

    @staticmethod
    def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The manifest of a complete store (following a ``CURRENT`` pointer), without opening the matrix."""
        root = resolve_store_path(path)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            if not root.exists():
                raise StoreError(
                    f"embedding store {root} does not exist. Build it with `mmrec embed --config <recipe>` "
                    "or import a matrix with `mmrec store import-npy`."
                )
            raise StoreError(
                f"{root} is not a complete embedding store (no manifest.json): an interrupted `mmrec embed` "
                "leaves it so; run the same command again to resume."
            )
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{manifest_path} is not an mmrec embedding store manifest.")
        return manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str], mmap: bool = True) -> EmbeddingStore:
        """Open a complete store.

        Args:
            path: the store folder (the one holding ``manifest.json``), or a named folder written by
                ``mmrec embed`` whose ``CURRENT`` file names the latest store inside it.
            mmap: memory-map the matrix (default) instead of loading it into RAM.

        Raises:
            StoreError: when the folder is missing, incomplete (no manifest) or inconsistent.
        """
        root = resolve_store_path(path)
        manifest = cls.read_manifest(root)
        vectors = np.load(root / "embeddings.npy", mmap_mode="r" if mmap else None)
        mask = np.load(root / "mask.npy")
        item_ids = pq.read_table(root / "keys.parquet").column("item_id").to_pylist()
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids) or mask.shape != (len(item_ids),):
            raise StoreError(
                f"{root} is inconsistent: embeddings {vectors.shape}, mask {mask.shape}, {len(item_ids)} keys. "
                "Delete the folder and rebuild it."
            )
        if int(manifest.get("dim", vectors.shape[1])) != vectors.shape[1]:
            raise StoreError(f"{root}: manifest says dim {manifest['dim']}, matrix has {vectors.shape[1]}.")
        return cls(path=root, manifest=manifest, item_ids=item_ids, vectors=vectors, mask=mask.astype(bool))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def num_items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    def __repr__(self) -> str:
        """One line: path, shape, dtype, valid rows and encoder (never the arrays)."""
        return (
            f"EmbeddingStore({str(self.path)!r}, {self.num_items} x {self.dim} {self.vectors.dtype}, "
            f"{int(self.mask.sum())} valid, encoder={self.manifest.get('encoder')!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def tensor(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The whole matrix as a tensor ``(num_items, dim)`` (a copy in ``dtype``, default float32)."""
        import torch

        return torch.from_numpy(np.asarray(self.vectors)).to(dtype or torch.float32)

    def aligned(
        self, item_ids: Sequence[str], dtype: torch.dtype | None = None, chunk_rows: int = 65536
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows re-ordered to ``item_ids``; ids absent from the store get zeros and mask False.

        Memory stays bounded by the output: the memory-mapped matrix is gathered in chunks.

        Args:
            item_ids: the wanted order (typically a dataset's item order).
            dtype: output dtype (default float32).
            chunk_rows: rows gathered per step.

        Returns:
            ``(len(item_ids), dim)`` tensor and ``(len(item_ids),)`` bool mask.
        """
        import torch

        dtype = dtype or torch.float32
        index = {k: i for i, k in enumerate(self.item_ids)}
        rows = np.fromiter((index.get(k, -1) for k in item_ids), dtype=np.int64, count=len(item_ids))
        out = torch.zeros(len(item_ids), self.dim, dtype=dtype)
        mask = torch.zeros(len(item_ids), dtype=torch.bool)
        found = np.nonzero(rows >= 0)[0]
        for start in range(0, len(found), chunk_rows):
            pos = found[start : start + chunk_rows]
            src = rows[pos]
            order = np.argsort(src)  # sorted reads are friendlier to a memory map
            block = np.asarray(self.vectors[src[order]], dtype=np.float32)
            out[torch.from_numpy(pos[order])] = torch.from_numpy(block).to(dtype)
            mask[torch.from_numpy(pos)] = torch.from_numpy(self.mask[src])
        out[~mask] = 0
        return out, mask


def write_store(
    path: str | os.PathLike[str],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    encoder: str,
    weights: str = "unknown",
    dtype: str = "float32",
    failures: Mapping[str, str] | None = None,
    overwrite: bool = False,
    **manifest_extra: Any,
) -> EmbeddingStore:
    """Write a complete store from an in-memory matrix, atomically (temporary folder, then rename).

    Args:
        path: the store folder to create.
        item_ids: row keys, unique.
        vectors: ``(len(item_ids), dim)`` array.
        mask: ``(len(item_ids),)`` bool; defaults to all valid. Invalid rows are zeroed.
        encoder: what produced the vectors (registry name, or e.g. ``"import/npy"``).
        weights: identity of the weights that produced them.
        dtype: ``"float32"`` or ``"float16"``.
        failures: item id -> reason for invalid rows.
        overwrite: replace an existing store.
        **manifest_extra: more manifest keys (fingerprint, provenance, timings...).
    """
    root = Path(path).expanduser().resolve()
    if root.exists() and not overwrite:
        raise StoreError(f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    if dtype not in _DTYPES:
        raise StoreError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise StoreError(f"vectors must be (len(item_ids)={len(item_ids)}, dim); got {vectors.shape}.")
    if len(set(item_ids)) != len(item_ids):
        raise StoreError("item_ids must be unique.")
    mask = np.ones(len(item_ids), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    vectors = vectors.astype(_DTYPES[dtype], copy=True)
    finite = np.isfinite(vectors).all(axis=1)
    failures = dict(failures or {})
    for i in np.nonzero(mask & ~finite)[0]:
        failures.setdefault(str(item_ids[int(i)]), "non-finite values in the vector")
    mask = mask & finite
    vectors[~mask] = 0
    manifest = store_manifest(
        encoder=encoder,
        weights=weights,
        dim=int(vectors.shape[1]),
        dtype=dtype,
        count=len(item_ids),
        valid=int(mask.sum()),
        failures=failures,
        **manifest_extra,
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        np.save(tmp / "embeddings.npy", vectors)
        np.save(tmp / "mask.npy", mask)
        write_keys(tmp, item_ids)
        commit_store(tmp, root, manifest, overwrite=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EmbeddingStore.open(root)


def store_manifest(
    *,
    encoder: str,
    weights: str,
    dim: int,
    dtype: str,
    count: int,
    valid: int,
    failures: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest of a complete store: format keys first, then ``extra`` (fingerprint, provenance...)."""
    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "encoder": encoder,
        "weights": weights,
        "dim": int(dim),
        "dtype": dtype,
        "count": int(count),
        "valid": int(valid),
        "failures": dict(failures or {}),
        "created_by": f"mmrec {__version__}",
        **extra,
    }


def write_keys(folder: str | os.PathLike[str], item_ids: Sequence[str]) -> None:
    """Write ``keys.parquet`` (one string column ``item_id``, the row order) into ``folder``."""
    table = pa.table({"item_id": pa.array([str(k) for k in item_ids], pa.string())})
    pq.write_table(table, Path(folder) / "keys.parquet")


def commit_store(
    tmp: str | os.PathLike[str],
    root: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Finish a store assembled in ``tmp`` (``embeddings.npy``, ``mask.npy``, ``keys.parquet`` already there):
    write ``manifest.json`` last, then rename ``tmp`` to ``root``.

    Raises:
        StoreError: ``root`` exists and ``overwrite`` is false (``tmp`` is left for the caller to remove).
    """
    tmp, root = Path(tmp), Path(root)
    if root.exists() and not overwrite:
        raise StoreError(f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(dict(manifest), f, indent=2, default=str)
        f.write("\n")
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def resolve_store_path(path: str | os.PathLike[str]) -> Path:
    """Follow a named store folder's ``CURRENT`` pointer to the concrete store folder.

    ``mmrec embed`` writes ``<cache>/<name>/<fingerprint>/`` and ``<cache>/<name>/CURRENT`` (the latest
    fingerprint), so configs can name ``<cache>/<name>`` and keep working when the store is rebuilt.
    """
    root = Path(path).expanduser().resolve()
    if (root / "manifest.json").is_file():
        return root
    pointer = root / "CURRENT"
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise StoreError(f"{pointer} must name a store folder inside {root}; it holds {name!r}.")
        return root / name
    return root
