"""Importing a ``(num_items, dim)`` ``.npy`` matrix as an embedding store aligned to a canonical dataset.

``mmrec store import-npy`` is the command-line face of :func:`import_npy`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Literal

import numpy as np

from mmrec.data.canonical import CanonicalDataset
from mmrec.data.hashing import file_sha256
from mmrec.store.reader import EmbeddingStore, StoreError, store_fingerprint, write_store


def import_npy(
    npy: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    keys: Literal["dataset-order", "row-index"] = "dataset-order",
    name: str | None = None,
    dtype: Literal["float16", "float32"] | None = None,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Import a ``(num_items, dim)`` ``.npy`` matrix as a store aligned to a canonical dataset.

    Args:
        npy: the matrix file (loaded without pickle).
        dataset: the canonical dataset the rows belong to.
        out: store folder, or the cache folder when ``name`` is given.
        keys: ``dataset-order`` (row k = k-th item of ``items.parquet``) or ``row-index`` (row k = the item
            whose id is ``"k"``; the dataset's ids must be exactly ``0..N-1``).
        name: write ``out/<name>/<fingerprint>/`` + ``CURRENT`` instead of ``out``.
        dtype: ``float16`` / ``float32`` (default: float16 for a float16 file, else float32).
        overwrite: replace an existing store.

    Raises:
        StoreError: wrong number of rows, not a 2-D matrix, ids that do not fit ``row-index``.
    """
    ds = CanonicalDataset.load(dataset)
    try:
        vectors = np.load(npy, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {npy} as a .npy matrix ({e}).") from e
    if vectors.ndim != 2:
        raise StoreError(f"{npy} holds an array of shape {vectors.shape}; expected (num_items, dim).")
    ids = [str(i) for i in ds.item_ids]
    if vectors.shape[0] != len(ids):
        raise StoreError(
            f"{npy} has {vectors.shape[0]} rows but dataset {ds.path} has {len(ids)} items; the matrix must have one row "
            "per item (check that it belongs to this dataset)."
        )
    if keys == "row-index":
        if sorted(ids, key=lambda s: (len(s), s)) != [str(k) for k in range(len(ids))]:
            raise StoreError(
                f"--keys row-index needs item ids 0..{len(ids) - 1} (row k = item 'k'); dataset {ds.path} has ids like "
                f"{ids[:3]}. Use --keys dataset-order if row k is the k-th item of items.parquet."
            )
        row_keys = [str(k) for k in range(len(ids))]
    elif keys == "dataset-order":
        row_keys = ids
    else:
        raise StoreError(f"--keys must be dataset-order or row-index, got {keys!r}.")
    dtype = dtype or ("float16" if vectors.dtype == np.float16 else "float32")
    weights = f"sha256:{file_sha256(npy)}"
    inputs = (
        f"dataset:{ds.fingerprint}|keys={keys}|" + hashlib.sha256("\n".join(row_keys).encode()).hexdigest()
    )
    fp = store_fingerprint(encoder="import/npy", weights=weights, dtype=dtype, inputs=inputs)
    target = Path(out).expanduser().resolve()
    if name:
        target = target / name / fp
    store = write_store(
        target,
        row_keys,
        np.asarray(vectors),
        encoder="import/npy",
        weights=weights,
        dtype=dtype,
        overwrite=overwrite,
        fingerprint=fp,
        source=str(Path(npy).resolve()),
        source_dtype=str(vectors.dtype),
        keys_mode=keys,
        dataset={"path": str(ds.path), "fingerprint": ds.fingerprint, "name": ds.name},
    )
    if name:
        tmp = target.parent / f".CURRENT.tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_text(fp + "\n", encoding="utf-8")
        os.replace(tmp, target.parent / "CURRENT")
    return store
