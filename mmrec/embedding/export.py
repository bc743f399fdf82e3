"""Export an embedding store for other recommenders: ``.npy`` + keys, Parquet, or a RecBole ``.feat`` file.

- ``npy``: ``<out>.npy`` (the ``(num_items, dim)`` matrix, store dtype), ``<out>.keys.txt`` (one item id per
  line, the row order) and ``<out>.mask.npy`` (bool validity);
- ``parquet``: columns ``item_id`` (string), ``vector`` (list of float32) and ``valid`` (bool), all rows;
- ``recbole``: an atomic feature file, tab-separated, header ``item_id:token<TAB><field>:float_seq``,
  the floats of a vector separated by spaces (printed with 9 significant digits, so float32 values
  round-trip exactly), valid rows only.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from mmrec.store import write_store
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_store(d / "s", ["a", "b"], np.array([[1, 2], [3, 4]], np.float32), np.array([True, False]), encoder="toy/x")
    >>> [p.name for p in export_store(d / "s", "recbole", d / "toy.feat", field="img")]
    ['toy.feat']
    >>> (d / "toy.feat").read_text().splitlines()
    ['item_id:token\\timg:float_seq', 'a\\t1 2']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmrec.store.reader import EmbeddingStore, StoreError

ExportFormat = Literal["npy", "parquet", "recbole"]
FORMATS: tuple[str, ...] = ("npy", "parquet", "recbole")
_ROWS = 65536


def _check_ids(ids: list[str], what: str) -> None:
    bad = next((k for k in ids if any(c in k for c in "\n\r\t")), None)
    if bad is not None:
        raise StoreError(
            f"item id {bad!r} contains a tab or newline and cannot be written to a {what} file; use --format parquet."
        )


def _npy_paths(out: Path) -> tuple[Path, Path, Path]:
    base = out.with_suffix("") if out.suffix == ".npy" else out
    return (
        base.with_name(base.name + ".npy"),
        base.with_name(base.name + ".keys.txt"),
        base.with_name(base.name + ".mask.npy"),
    )


def export_store(
    store: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    field: str = "item_emb",
    overwrite: bool = False,
) -> list[Path]:
    """Write a complete store (or a named folder with ``CURRENT``) in another format.

    Args:
        store: the store folder.
        fmt: ``npy``, ``parquet`` or ``recbole``.
        out: output file (``npy``: the matrix path, keys and mask files are written beside it).
        field: feature name in the RecBole header.
        overwrite: replace existing output files.

    Returns:
        The files written.

    Raises:
        StoreError: unknown format, existing output, or ids that the format cannot hold.
    """
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    s = EmbeddingStore.open(store)
    out_path = Path(out).expanduser().resolve()
    targets = list(_npy_paths(out_path)) if fmt == "npy" else [out_path]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise StoreError(f"{existing[0]} already exists; pass --overwrite or choose another --out.")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ids = [str(k) for k in s.item_ids]
    if fmt == "npy":
        _check_ids(ids, "keys.txt")
        mat, keys, mask = targets
        arr = np.lib.format.open_memmap(_tmp(mat), mode="w+", dtype=s.vectors.dtype, shape=s.vectors.shape)
        for start in range(0, s.num_items, _ROWS):
            arr[start : start + _ROWS] = s.vectors[start : start + _ROWS]
        arr.flush()
        del arr
        os.replace(_tmp(mat), mat)
        _write_text(keys, "".join(k + "\n" for k in ids))
        with open(_tmp(mask), "wb") as f:
            np.save(f, s.mask)
        os.replace(_tmp(mask), mask)
        return targets
    if fmt == "parquet":
        schema = pa.schema(
            [("item_id", pa.string()), ("vector", pa.list_(pa.float32())), ("valid", pa.bool_())]
        )
        tmp = _tmp(out_path)
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for start in range(0, s.num_items, _ROWS):
                    block = np.asarray(s.vectors[start : start + _ROWS], dtype=np.float32)
                    flat = pa.array(block.reshape(-1), pa.float32())
                    offsets = pa.array(np.arange(0, block.size + 1, s.dim, dtype=np.int32), pa.int32())
                    vectors = pa.ListArray.from_arrays(offsets, flat)
                    table = pa.Table.from_arrays(
                        [
                            pa.array(ids[start : start + _ROWS], pa.string()),
                            vectors,
                            pa.array(s.mask[start : start + _ROWS]),
                        ],
                        schema=schema,
                    )
                    writer.write_table(table)
            os.replace(tmp, out_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return targets
    # recbole atomic feature file
    _check_ids(ids, "RecBole .feat")
    if not field or any(c in field for c in ": \t\n"):
        raise StoreError(f"--field must be a plain name (no ':', spaces or tabs); got {field!r}.")
    tmp = _tmp(out_path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(f"item_id:token\t{field}:float_seq\n")
            for start in range(0, s.num_items, _ROWS):
                block = np.asarray(s.vectors[start : start + _ROWS], dtype=np.float32)
                valid = s.mask[start : start + _ROWS]
                for j in np.nonzero(valid)[0]:
                    f.write(ids[start + j] + "\t" + " ".join("%.9g" % v for v in block[j].tolist()) + "\n")  # noqa: UP031
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return targets


def read_recbole_feat(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, str]:
    """Parse a ``.feat`` file written by :func:`export_store` -> ``(item_ids, (n, dim) float32, field)``."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if len(header) != 2 or header[0] != "item_id:token" or not header[1].endswith(":float_seq"):
            raise StoreError(f"{path}: header {header} is not `item_id:token<TAB><field>:float_seq`.")
        ids: list[str] = []
        rows: list[list[float]] = []
        for line in f:
            key, _, values = line.rstrip("\n").partition("\t")
            ids.append(key)
            rows.append([float(v) for v in values.split(" ")])
    return ids, np.asarray(rows, dtype=np.float32), header[1].rsplit(":", 1)[0]


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
