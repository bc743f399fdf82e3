"""Merging part files into a complete embedding store, and the ``CURRENT`` pointer.

:func:`merge_parts` reads every ``part-*.npy`` / ``part-*.json`` of a ``.partial`` folder (each checked
against its ``.done`` marker), writes the complete-store layout of :mod:`mmrec.store.reader` into a
temporary folder (``embeddings.npy`` through a memory map, so memory stays bounded by one part;
``mask.npy``; ``keys.parquet``; ``manifest.json`` last), renames it to ``<fingerprint>/`` and removes the
``.partial`` folder. :func:`write_current` then points ``<cache>/<name>/CURRENT`` at it, atomically.

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

import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.embedding.parts import PartError, PartPlan, part_name, read_part
from mmrec.store.reader import commit_store, store_manifest, write_keys

NON_FINITE = "non-finite values in the vector"


def write_current(name_dir: str | os.PathLike[str], fingerprint: str) -> None:
    """Point ``<name_dir>/CURRENT`` at ``fingerprint`` (temporary file + rename, so readers never see half)."""
    d = Path(name_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".CURRENT.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(fingerprint + "\n", encoding="utf-8")
    os.replace(tmp, d / "CURRENT")


def merge_parts(
    plan: PartPlan,
    store_dir: str | os.PathLike[str],
    item_ids: Sequence[str],
    *,
    dtype: str,
    encoder: str,
    weights: str,
    started: float | None = None,
    **manifest_extra: Any,
) -> dict[str, Any]:
    """Assemble the parts of ``plan`` into the complete store ``store_dir`` and return its manifest.

    Rows are aligned to ``item_ids`` (the input order). Items whose status is not ``ok``, or whose vector
    holds NaN/inf, get mask False and a zero row; failures are recorded ``{item_id: reason}`` with
    per-reason counts and details; null inputs are counted as ``missing value`` separately.

    Args:
        plan: the chunking (every chunk must have a valid ``.done`` marker).
        store_dir: ``<cache>/<name>/<fingerprint>`` (must not exist yet).
        item_ids: the input's item ids in order.
        dtype: store dtype (``float16`` / ``float32``), the dtype of the part rows.
        encoder: encoder registry name (manifest ``encoder``).
        weights: weights identity (manifest ``weights``).
        started: ``time.perf_counter()`` at the start of the build: ``timings.total_s`` is measured from it.
        **manifest_extra: more manifest keys.

    Raises:
        PartError: a part is missing, corrupt or does not match the input's keys.
    """
    t0 = time.perf_counter()
    store_dir = Path(store_dir)
    n = len(item_ids)
    if plan.num_items != n:
        raise PartError(f"plan covers {plan.num_items} items but the input has {n}; run `mmrec embed` again.")
    tmp = store_dir.parent / f".{store_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        emb: np.ndarray | None = None
        mask = np.zeros(n, dtype=bool)
        failures: dict[str, str] = {}
        details: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        parts: dict[str, Any] = {}
        dim = None
        for k in range(plan.num_chunks):
            vecs, meta = read_part(plan.partial_dir, k)
            start, end = plan.chunk_range(k)
            keys = list(meta.get("keys", []))
            if keys != [str(x) for x in item_ids[start:end]]:
                raise PartError(
                    f"{plan.partial_dir}/{part_name(k)} holds other items than the input's rows {start}..{end - 1}; "
                    f"delete {plan.partial_dir} and run again."
                )
            if emb is None:
                dim = int(vecs.shape[1])
                emb = np.lib.format.open_memmap(
                    tmp / "embeddings.npy", mode="w+", dtype=np.dtype(dtype), shape=(n, dim)
                )
            if vecs.shape != (end - start, dim) or vecs.dtype != np.dtype(dtype):
                raise PartError(
                    f"{plan.partial_dir}/{part_name(k)} has rows {vecs.shape} {vecs.dtype}, expected "
                    f"({end - start}, {dim}) {dtype}; delete it (and its .done) and run again."
                )
            status = list(meta["status"])
            ok = np.array([s == "ok" for s in status], dtype=bool)
            finite = np.isfinite(vecs).all(axis=1)
            block = np.array(vecs, copy=True)
            for j in range(end - start):
                key = keys[j]
                if status[j] == "missing":
                    missing.append(key)
                elif status[j] == "failed":
                    failures[key] = str(meta["reasons"][j])
                    details[key] = {
                        "reason": failures[key],
                        "source": meta.get("sources", [None] * len(keys))[j],
                        "detail": meta.get("details", [None] * len(keys))[j],
                    }
                elif not finite[j]:
                    failures[key] = NON_FINITE
                    details[key] = {
                        "reason": NON_FINITE,
                        "source": meta.get("sources", [None] * len(keys))[j],
                        "detail": None,
                    }
            ok &= finite
            block[~ok] = 0
            emb[start:end] = block
            mask[start:end] = ok
            parts[part_name(k)] = {
                kk: meta[kk]
                for kk in ("items", "valid", "wall_s", "encode_s", "preprocess_s", "rank", "run_id")
                if kk in meta
            }
        if emb is None:
            raise PartError("no parts to merge (empty input)")
        emb.flush()
        del emb
        np.save(tmp / "mask.npy", mask)
        write_keys(tmp, item_ids)
        timings = dict(manifest_extra.pop("timings", {}))
        timings["merge_s"] = round(time.perf_counter() - t0, 4)
        if started is not None:
            timings["total_s"] = round(time.perf_counter() - started, 4)
        timings["parts"] = parts
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
