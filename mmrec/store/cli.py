"""``mmrec store``: inspect embedding stores and import ``.npy`` matrices as stores.

``mmrec store info PATH [--json]``
    manifest summary of a store (``PATH`` may be ``<cache>/<name>``: its ``CURRENT`` is followed, and the
    other builds in that folder are listed).
``mmrec store ls CACHE``
    every store under a cache folder (name, fingerprint, current or not, items, valid, encoder).
``mmrec store import-npy --npy F --dataset D --out DIR [--keys dataset-order|row-index] [--name NAME]``
    wraps :func:`mmrec.store.write_store`: row ``k`` of ``F`` is the ``k``-th item of the dataset
    (``dataset-order``) or the item whose id is ``k`` (``row-index``, MMRec's convention). With
    ``--name`` the store goes to ``DIR/<name>/<fingerprint>/`` with a ``CURRENT`` pointer (the layout of
    ``mmrec embed`` caches), else to ``DIR`` itself.

Example:
    >>> main(["info", "cache/demo/image"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data.hashing import file_sha256
from mmrec.store.reader import (
    EmbeddingStore,
    StoreError,
    resolve_store_path,
    store_fingerprint,
    write_store,
)


def _fmt_seconds(v: Any) -> str:
    return f"{float(v):.2f} s" if isinstance(v, (int, float)) else "?"


def describe_manifest(m: dict[str, Any], path: Path) -> str:
    """Human-readable summary of a manifest."""
    lines = [f"store       {path}"]
    lines.append(f"fingerprint {m.get('fingerprint', '?')}")
    lines.append(f"encoder     {m.get('encoder')}  (weights {m.get('weights')})")
    if m.get("random_init") or str(m.get("weights", "")).startswith("random-init"):
        lines.append("WARNING     RANDOM-INIT WEIGHTS: these vectors carry no pretrained knowledge")
    lines.append(f"vectors     {m.get('count')} x {m.get('dim')} {m.get('dtype')}, {m.get('valid')} valid")
    if m.get("missing_count"):
        lines.append(f"missing     {m['missing_count']} items without a value")
    counts = m.get("failure_counts") or {}
    if not counts and m.get("failures"):
        for reason in m["failures"].values():
            counts[reason] = counts.get(reason, 0) + 1
    lines.append(
        "failures    " + (", ".join(f"{r}: {n}" for r, n in sorted(counts.items())) if counts else "none")
    )
    if m.get("columns"):
        lines.append(
            f"input       {m.get('modality', '')} column(s) {m['columns']} of {m.get('input', {}).get('path') or m.get('input', {}).get('spec', '?')}"
        )
    t = m.get("timings", {})
    if t:
        rate = m.get("throughput_items_per_s")
        lines.append(
            f"timings     total {_fmt_seconds(t.get('total_s'))}"
            + (f", {rate:.1f} items/s" if rate else "")
            + f", {m.get('num_parts', '?')} part(s), world size {m.get('world_size', '?')}"
        )
    if m.get("created_at") or m.get("created_by"):
        lines.append(f"created     {m.get('created_at', '')} by {m.get('created_by', '?')}")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    root = Path(args.path).expanduser().resolve()
    store = resolve_store_path(root)
    manifest = EmbeddingStore.read_manifest(store)
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
        return 0
    print(describe_manifest(manifest, store))
    if (root / "CURRENT").is_file() and store != root:
        others = sorted(
            p.name for p in root.iterdir() if p.is_dir() and p != store and not p.name.startswith(".")
        )
        if others:
            print(f"other builds {', '.join(others)}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    cache = Path(args.cache).expanduser().resolve()
    if not cache.is_dir():
        raise StoreError(f"cache folder {cache} does not exist.")
    rows = []
    for name_dir in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        current = (
            (name_dir / "CURRENT").read_text(encoding="utf-8").strip()
            if (name_dir / "CURRENT").is_file()
            else None
        )
        for d in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name.endswith(".partial"):
                done = len(list(d.glob("part-*.done")))
                rows.append((name_dir.name, d.name, "", f"in progress ({done} part(s) done)", "", ""))
                continue
            try:
                m = EmbeddingStore.read_manifest(d)
            except StoreError:
                rows.append((name_dir.name, d.name, "", "incomplete", "", ""))
                continue
            rows.append(
                (
                    name_dir.name,
                    d.name,
                    "*" if d.name == current else "",
                    str(m.get("count")),
                    str(m.get("valid")),
                    str(m.get("encoder")),
                )
            )
    if not rows:
        print(f"no stores under {cache}")
        return 0
    header = ("name", "fingerprint", "cur", "items", "valid", "encoder")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def import_npy(
    npy: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    keys: str = "dataset-order",
    name: str | None = None,
    dtype: str | None = None,
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
    from mmrec.data.canonical import CanonicalDataset

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


def _import(args: argparse.Namespace) -> int:
    store = import_npy(
        args.npy,
        args.dataset,
        args.out,
        keys=args.keys,
        name=args.name,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    print(f"imported {store.num_items} x {store.dim} ({store.manifest['dtype']}) -> {store.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``mmrec store``: ``info``, ``ls`` and ``import-npy``. Returns the exit status."""
    from mmrec.data.canonical import DatasetError

    p = argparse.ArgumentParser(
        prog="mmrec store", description="Inspect embedding stores, import .npy matrices."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("info", help="manifest summary of a store (follows CURRENT)")
    s.add_argument("path")
    s.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    s.set_defaults(func=_info)
    s = sub.add_parser("ls", help="list the stores under a cache folder")
    s.add_argument("cache")
    s.set_defaults(func=_ls)
    s = sub.add_parser("import-npy", help="import a (num_items, dim) .npy matrix aligned to a dataset")
    s.add_argument("--npy", required=True, help="matrix file")
    s.add_argument("--dataset", required=True, help="canonical dataset folder the rows belong to")
    s.add_argument("--out", required=True, help="store folder (or cache folder with --name)")
    s.add_argument(
        "--keys",
        choices=("dataset-order", "row-index"),
        default="dataset-order",
        help="row k = k-th dataset item (dataset-order, default) or item id 'k' (row-index)",
    )
    s.add_argument("--name", default=None, help="store name: write <out>/<name>/<fingerprint>/ + CURRENT")
    s.add_argument("--dtype", choices=("float16", "float32"), default=None)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_import)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except (StoreError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
