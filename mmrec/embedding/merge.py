"""Merging part files into a complete embedding store, and the ``CURRENT`` pointer.

:func:`merge_parts` finds the part of every chunk in the ``.partial`` folder and any other folders given
(parts written by ranks on machines without a shared filesystem, copied here), each checked against its
``.done`` marker, and verifies that every item of the input is there exactly once: for a dataset, the part
of chunk ``k`` must hold exactly the input's items ``[k*S, (k+1)*S)``; for shards, every shard must have a
part and no item id may appear twice across them. It writes the complete-store layout of
:mod:`mmrec.store.reader` into a temporary folder (``embeddings.npy`` through a memory map, so memory stays
bounded by one part; ``mask.npy``; ``keys.parquet``; ``manifest.json`` last), renames it to
``<fingerprint>/`` and removes the ``.partial`` folder (the other folders are left alone).
:func:`write_current` then points ``<cache>/<name>/CURRENT`` at it, atomically.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from mmrec.embedding.parts import PartPlan, write_part
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "image"
    >>> plan = PartPlan(root / "abc.partial", num_items=3, shard_size=2, keys_digest="k")
    >>> _ = plan.prepare()
    >>> write_part(plan.partial_dir, 0, np.ones((2, 4), np.float16), {"keys": ["a", "b"], "status": ["ok", "failed"],
    ...            "reasons": [None, "corrupt image"], "sources": ["a.jpg", "b.jpg"], "details": [None, "bad"]})
    >>> write_part(plan.partial_dir, 1, np.ones((1, 4), np.float16), {"keys": ["c"], "status": ["missing"],
    ...            "reasons": ["missing value"], "sources": [None], "details": [None]})
    >>> m = merge_parts(plan, root / "abc", ["a", "b", "c"], dtype="float16", encoder="toy/x", weights="w")
    >>> m["valid"], m["failures"], m["missing_count"]
    (1, {'b': 'corrupt image'}, 1)
    >>> write_current(root, "abc"); (root / "CURRENT").read_text().strip()
    'abc'
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.embedding.parts import PartError, PartPlan, find_part, part_name, read_part
from mmrec.store.reader import commit_store, store_manifest, write_keys

NON_FINITE = "non-finite values in the vector"


def write_current(name_dir: str | os.PathLike[str], fingerprint: str) -> None:
    """Point ``<name_dir>/CURRENT`` at ``fingerprint`` (temporary file + rename, so readers never see half)."""
    d = Path(name_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".CURRENT.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(fingerprint + "\n", encoding="utf-8")
    os.replace(tmp, d / "CURRENT")


def _locate(plan: PartPlan, dirs: list[Path]) -> list[tuple[Path, int]]:
    """``(folder, rows)`` of every chunk's part, in chunk order (checks each part exists exactly once)."""
    located = []
    missing = []
    for k in range(plan.num_chunks):
        try:
            d = find_part(dirs, k)
        except PartError as e:
            if "computed twice" in str(e):
                raise
            missing.append(k)
            continue
        marker = json.loads((d / f"{part_name(k)}.done").read_text(encoding="utf-8"))
        located.append((d, int(marker.get("rows", 0))))
    if missing:
        what = (
            [plan.shards[k] for k in missing[:5]]
            if plan.shards is not None
            else [f"items {plan.chunk_range(k)[0]}..{plan.chunk_range(k)[1] - 1}" for k in missing[:5]]
        )
        raise PartError(
            f"{len(missing)} of {plan.num_chunks} part(s) are missing from {[str(d) for d in dirs]}: chunks "
            f"{missing[:10]}{'...' if len(missing) > 10 else ''} ({', '.join(map(str, what))}). Run `mmrec embed` "
            "again to compute them, or, when other machines wrote them, copy their part folders here and pass "
            "them to `--merge_from`."
        )
    return located


def merge_parts(
    plan: PartPlan,
    store_dir: str | os.PathLike[str],
    item_ids: Sequence[str] | None,
    *,
    dtype: str,
    encoder: str,
    weights: str,
    part_dirs: Sequence[str | os.PathLike[str]] = (),
    started: float | None = None,
    **manifest_extra: Any,
) -> dict[str, Any]:
    """Assemble the parts of ``plan`` into the complete store ``store_dir`` and return its manifest.

    Rows follow the input order (dataset order, or shard order then order within each shard). Items whose
    status is not ``ok``, or whose vector holds NaN/inf, get mask False and a zero row; failures are
    recorded ``{item_id: reason}`` with per-reason counts and details; null inputs are counted as
    ``missing value`` separately.

    Args:
        plan: the chunking.
        store_dir: ``<cache>/<name>/<fingerprint>`` (must not exist yet).
        item_ids: the input's item ids in order (a dataset), or ``None`` (shards: the ids come from the parts).
        dtype: store dtype (``float16`` / ``float32``), the dtype of the part rows.
        encoder: encoder registry name (manifest ``encoder``).
        weights: weights identity (manifest ``weights``).
        part_dirs: more folders holding parts of this plan (besides ``plan.partial_dir``).
        started: ``time.perf_counter()`` at the start of the build: ``timings.total_s`` is measured from it.
        **manifest_extra: more manifest keys.

    Raises:
        PartError: a part is missing, corrupt, present twice with different rows, or does not match the
            input's items; an item id appears twice.
    """
    t0 = time.perf_counter()
    store_dir = Path(store_dir)
    dirs: list[Path] = []
    for d in [Path(plan.partial_dir), *(Path(x) for x in part_dirs)]:
        if d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    located = _locate(plan, dirs)
    n = sum(rows for _, rows in located)
    if item_ids is not None:
        if plan.num_items != len(item_ids) or n != len(item_ids):
            raise PartError(
                f"the parts hold {n} rows for an input of {len(item_ids)} items; delete {plan.partial_dir} and "
                "run `mmrec embed` again."
            )
        if len(set(item_ids)) != len(item_ids):
            raise PartError("the input's item ids are not unique; fix the dataset's items.parquet.")
    if n == 0:
        raise PartError("no items to merge: the input is empty.")
    tmp = store_dir.parent / f".{store_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        emb: np.ndarray | None = None
        mask = np.zeros(n, dtype=bool)
        all_keys: list[str] = []
        failures: dict[str, str] = {}
        details: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        parts: dict[str, Any] = {}
        shards: list[dict[str, Any]] = []
        dim = None
        start = 0
        for k, (d, rows) in enumerate(located):
            vecs, meta = read_part(d, k)
            end = start + rows
            keys = [str(x) for x in meta.get("keys", [])]
            if item_ids is not None and keys != [str(x) for x in item_ids[start:end]]:
                raise PartError(
                    f"{d}/{part_name(k)} holds other items than the input's rows {start}..{end - 1}; "
                    f"delete {plan.partial_dir} and run again."
                )
            if len(keys) != rows:
                raise PartError(
                    f"{d}/{part_name(k)} lists {len(keys)} keys for {rows} rows; delete it and run again."
                )
            if dim is None and vecs.ndim == 2 and (rows > 0 or vecs.shape[1] > 0):
                dim = int(vecs.shape[1])
            if dim is not None and emb is None:
                emb = np.lib.format.open_memmap(
                    tmp / "embeddings.npy", mode="w+", dtype=np.dtype(dtype), shape=(n, dim)
                )
            if vecs.shape != (rows, dim if dim is not None else vecs.shape[1]) or vecs.dtype != np.dtype(
                dtype
            ):
                raise PartError(
                    f"{d}/{part_name(k)} has rows {vecs.shape} {vecs.dtype}, expected "
                    f"({rows}, {dim}) {dtype}; delete it (and its .done) and run again."
                )
            status = list(meta["status"])
            ok = np.array([s == "ok" for s in status], dtype=bool)
            finite = np.isfinite(vecs).all(axis=1) if rows else np.zeros(0, dtype=bool)
            block = np.array(vecs, copy=True)
            sources = meta.get("sources", [None] * len(keys))
            for j in range(rows):
                key = keys[j]
                if status[j] == "missing":
                    missing.append(key)
                elif status[j] == "failed":
                    failures[key] = str(meta["reasons"][j])
                    details[key] = {
                        "reason": failures[key],
                        "source": sources[j],
                        "detail": meta.get("details", [None] * len(keys))[j],
                    }
                elif not finite[j]:
                    failures[key] = NON_FINITE
                    details[key] = {"reason": NON_FINITE, "source": sources[j], "detail": None}
            ok &= finite
            if rows:
                block[~ok] = 0
                assert emb is not None
                emb[start:end] = block
                mask[start:end] = ok
            all_keys.extend(keys)
            parts[part_name(k)] = {
                kk: meta[kk]
                for kk in (
                    "items",
                    "valid",
                    "wall_s",
                    "encode_s",
                    "preprocess_s",
                    "rank",
                    "host",
                    "worker",
                    "run_id",
                )
                if kk in meta
            }
            if plan.shards is not None:
                shards.append(
                    {
                        "shard": plan.shards[k],
                        "items": rows,
                        "sha256": meta.get("shard_sha256"),
                        "bytes": meta.get("shard_bytes"),
                    }
                )
            start = end
        if emb is None:
            raise PartError("no part holds a vector row; the input is empty.")
        dup = [key for key, c in Counter(all_keys).items() if c > 1]
        if dup:
            raise PartError(
                f"{len(dup)} item id(s) appear more than once across the shards, e.g. {dup[:5]}; every item must "
                "be in exactly one shard (rewrite the shards, or drop the duplicates)."
            )
        emb.flush()
        del emb
        np.save(tmp / "mask.npy", mask)
        write_keys(tmp, all_keys)
        timings = dict(manifest_extra.pop("timings", {}))
        timings["merge_s"] = round(time.perf_counter() - t0, 4)
        if started is not None:
            timings["total_s"] = round(time.perf_counter() - started, 4)
        timings["parts"] = parts
        if shards:
            manifest_extra["shards"] = shards
        manifest = store_manifest(
            encoder=encoder,
            weights=weights,
            dim=int(dim or 0),
            dtype=dtype,
            count=n,
            valid=int(mask.sum()),
            failures=failures,
            failure_counts=dict(sorted(Counter(failures.values()).items())),
            failure_details=details,
            missing_count=len(missing),
            missing_values=missing,
            timings=timings,
            **manifest_extra,
        )
        if (store_dir / "manifest.json").is_file():
            # another process completed the same content-addressed store meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            try:
                commit_store(
                    tmp, store_dir, manifest, overwrite=True
                )  # an existing folder here is incomplete junk
            except OSError:
                if not (store_dir / "manifest.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(plan.partial_dir, ignore_errors=True)
    return manifest
