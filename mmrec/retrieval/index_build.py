"""Build an item index from vectors, calibrate its search parameters, describe its source."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np

from mmrec import __version__
from mmrec.retrieval.faiss_runtime import gpu_available, set_threads, to_gpu
from mmrec.retrieval.index_params import (
    DEFAULT_PARAMS,
    IVF_ENCODINGS,
    METRICS,
    PQ_MAX_SUBQUANTIZERS,
    ItemIndexError,
    Kind,
    Metric,
    choose_kind,
    default_pq_m,
    faiss_description,
    resolve_params,
)
from mmrec.retrieval.item_index import (
    BUILD_BATCH_ROWS,
    INDEX_FORMAT,
    INDEX_VERSION,
    ItemIndex,
    commit_folder,
    write_index_files,
)
from mmrec.retrieval.topk import as_queries, normalize_rows

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU builds are noise here
import faiss  # noqa: E402  (after the line above, which silences its import-time logging)

log = logging.getLogger("mmrec.retrieval.index")  # one logger for the index modules: `mmrec index` quiets it


#: Queries used to calibrate ``nprobe`` / ``ef_search`` when they are not given, and the k they measure.
CALIBRATION_QUERIES = 256


CALIBRATION_K = 10


def _ivf_default_encoding(dim: int, gpu: bool | None, *, pq_m_given: bool = False) -> str:
    """The ivf codes used when ``encoding`` is not given: ``pq4fs``, except ``sq8`` when the index goes to a
    GPU (faiss-gpu has no fast-scan kernel) or when ``dim`` has no divisor near 128 (e.g. a prime above
    128: a few sub-quantisers spanning many dimensions each give codes too coarse to shortlist from).
    """
    if gpu is not False and gpu_available():
        return "sq8"
    if not pq_m_given and 4 * default_pq_m(dim) < min(dim, PQ_MAX_SUBQUANTIZERS):
        log.info("dimension %d has no divisor near %d: ivf codes default to sq8.", dim, PQ_MAX_SUBQUANTIZERS)
        return "sq8"
    return str(DEFAULT_PARAMS["ivf"]["encoding"])


def _new_faiss_index(kind: str, dim: int, p: Mapping[str, Any]) -> Any:
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, int(p["M"]), metric)
        hnsw.hnsw.efConstruction = int(p["ef_construction"])
        hnsw.hnsw.efSearch = int(p["ef_search"] or 16)
        return hnsw
    quantizer = faiss.IndexFlatIP(dim)
    qtype = IVF_ENCODINGS[p["encoding"]]
    index: faiss.Index
    if p["encoding"] == "pq4fs":
        fast = faiss.IndexIVFPQFastScan(quantizer, dim, int(p["nlist"]), int(p["pq_m"]), 4, metric)
        # faiss warns once per sub-quantiser (up to 128 lines) below 39 x 16 training vectors; build_index
        # says it once instead
        fast.pq.cp.min_points_per_centroid = 1
        index = fast
    elif qtype is None:
        index = faiss.IndexIVFFlat(quantizer, dim, int(p["nlist"]), metric)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, int(p["nlist"]), getattr(faiss.ScalarQuantizer, qtype), metric
        )
    return index  # faiss's Python wrapper keeps `quantizer` alive as long as `index`


# --------------------------------------------------------------------------------------------- building
def build_index(
    vectors: Any,
    item_ids: Sequence[str],
    *,
    kind: Kind = "auto",
    metric: Metric = "ip",
    params: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    gpu: bool | None = None,
    batch_rows: int = BUILD_BATCH_ROWS,
    calibration_queries: Any = None,
) -> ItemIndex:
    """Build an :class:`ItemIndex` over ``vectors``, reading them in batches (works on memory maps).

    Args:
        vectors: ``(N, d)`` array, memory map or tensor (float16 / float32). Must be finite.
        item_ids: ``N`` unique item ids (row order).
        kind: ``auto`` (flat up to 100k items, ivf above; with flat, ``params`` are ignored), ``flat``,
            ``hnsw`` or ``ivf``.
        metric: ``ip`` (inner product, what mmrec models score with) or ``cosine`` (vectors and queries
            L2-normalised).
        params: kind parameters overriding :data:`DEFAULT_PARAMS` (ivf: ``nlist``, ``nprobe``, ``encoding``
            pq4fs|flat|sq8|sq4|fp16, ``pq_m`` (pq4fs sub-quantisers, default :func:`default_pq_m`),
            ``train_size``, ``rerank_factor`` (default 8 for pq4fs, 2 otherwise), ``seed``; hnsw: ``M``, ``ef_construction``,
            ``ef_search``, ``rerank_factor``).
        source: where the vectors come from, recorded in the manifest (see ``checkpoint_source`` /
            ``store_source``); used later to check that an index matches a model.
        out: when given, the index folder is written there while building (``vectors.npy`` filled batch
            by batch, so memory stays bounded) and the returned index is the saved one.
        overwrite: replace an existing ``out``.
        threads: faiss CPU threads (None = all cores).
        gpu: build on a GPU (None = when faiss-gpu sees one; HNSW always builds on CPU).
        batch_rows: rows read / added per step.
        calibration_queries: ``(M, d)`` typical queries (e.g. user vectors) used to choose ``nprobe`` /
            ``ef_search`` when they are not given: the smallest value whose recall@10 against exact search
            reaches ``target_recall`` (see :func:`calibrate`). Default: 256 sampled item vectors, each
            querying for its neighbours.

    Returns:
        The index (in memory, or saved in ``out``).

    Raises:
        ItemIndexError: bad shapes, duplicated ids, non-finite vectors, unknown kind / metric / params.

    Example:
        >>> import numpy as np
        >>> idx = build_index(np.random.rand(1000, 8).astype("float32"), [f"i{j}" for j in range(1000)], kind="ivf",
        ...                   params={"nlist": 8, "nprobe": 2})
        >>> idx.search(np.ones((1, 8), "float32"), k=5)[1].shape
        (1, 5)
    """
    t0 = time.perf_counter()
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().to("cpu").float().numpy()
    if not hasattr(vectors, "shape") or len(vectors.shape) != 2:
        raise ItemIndexError(
            f"vectors must be an (N, d) array; got {type(vectors).__name__} {getattr(vectors, 'shape', '')}."
        )
    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    item_ids = [str(x) for x in item_ids]
    if n < 1 or d < 1:
        raise ItemIndexError(f"cannot index an empty matrix {tuple(vectors.shape)}.")
    if len(item_ids) != n:
        raise ItemIndexError(f"{len(item_ids)} item ids for {n} vectors; give one id per row.")
    if len(set(item_ids)) != n:
        raise ItemIndexError("item ids must be unique; the same id names two rows.")
    if metric not in METRICS:
        raise ItemIndexError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    requested_kind, kind = kind, cast(Kind, choose_kind(n, kind))
    if requested_kind == "auto" and kind == "flat" and params:
        log.info(
            "auto: %d items get exact search; the approximate-index params %s are not used.", n, dict(params)
        )
        params = None
    if kind == "ivf" and "encoding" not in (params or {}):
        encoding = _ivf_default_encoding(d, gpu, pq_m_given="pq_m" in (params or {}))
        if encoding != DEFAULT_PARAMS["ivf"]["encoding"]:
            params = {**(params or {}), "encoding": encoding}
    p = resolve_params(kind, n, params)
    if kind == "ivf" and p["encoding"] == "pq4fs":
        p["pq_m"] = int(p["pq_m"] or default_pq_m(d))
        if d % p["pq_m"]:
            raise ItemIndexError(
                f"pq_m={p['pq_m']} does not divide the dimension {d}; pick a divisor of {d} "
                f"(default {default_pq_m(d)}) or another encoding (--params.encoding=sq8)."
            )
    set_threads(threads)
    root = Path(out).expanduser().resolve() if out is not None else None
    if root is not None and root.exists() and not overwrite:
        raise ItemIndexError(f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}" if root is not None else None
    if tmp is not None:
        tmp.mkdir(parents=True)
    try:
        # 1. the exact vectors, float32 (normalised for cosine), copied batch by batch
        src = vectors if hasattr(vectors, "__getitem__") else np.asarray(vectors)
        zero_copy = (
            isinstance(src, np.ndarray)
            and tmp is None
            and metric == "ip"
            and src.dtype == np.float32
            and src.flags.c_contiguous
        )
        dest: np.ndarray
        if tmp is not None:
            dest = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, d))
        else:
            dest = src if zero_copy else np.empty((n, d), dtype=np.float32)
        for start in range(0, n, batch_rows):
            block = np.asarray(src[start : start + batch_rows], dtype=np.float32)
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = start + int(np.nonzero(bad)[0][0])
                raise ItemIndexError(
                    f"vector of item {item_ids[row]!r} (row {row}) is not finite; fix or drop it before indexing "
                    "(a store's invalid rows are skipped by `mmrec index --store`)."
                )
            if metric == "cosine":
                block = normalize_rows(block)
            if not zero_copy:
                dest[start : start + block.shape[0]] = block
        # 2. the faiss index: train on a sample (sorted rows: sequential reads of a memory map), add in batches
        index, on_gpu = to_gpu(_new_faiss_index(kind, d, p), kind, gpu, p)
        if kind == "ivf":
            if p["encoding"] == "pq4fs" and p["train_size"] < 39 * 16:
                log.info(
                    "pq4fs codebooks trained on %d < 624 vectors are coarse; exact re-ranking keeps scores exact.",
                    p["train_size"],
                )
            rng = np.random.default_rng(p["seed"])
            sample = np.sort(rng.choice(n, size=p["train_size"], replace=False))
            index.train(np.ascontiguousarray(dest[sample], dtype=np.float32))
        for start in range(0, n, batch_rows):
            index.add(np.ascontiguousarray(dest[start : start + batch_rows], dtype=np.float32))
        manifest: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "kind": kind,
            "faiss_index": faiss_description(kind, p),
            "metric": metric,
            "dim": d,
            "count": n,
            "params": p,
            "build_seconds": round(time.perf_counter() - t0, 3),
            "built_on": "gpu" if on_gpu else "cpu",
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "created_by": f"mmrec {__version__}",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": dict(source or {}),
        }
        obj = ItemIndex(index=index, vectors=dest, item_ids=item_ids, manifest=manifest, on_gpu=on_gpu)
        manifest["calibration"] = calibrate(obj, calibration_queries)
        manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
        if tmp is not None and root is not None:
            if isinstance(dest, np.memmap):
                dest.flush()
            del dest, obj
            write_index_files(tmp, index, item_ids, manifest)
            commit_folder(tmp, root)
            log.info(
                "built %s index over %d x %d in %.1fs -> %s",
                manifest["faiss_index"],
                n,
                d,
                manifest["build_seconds"],
                root,
            )
            del index
            return ItemIndex.load(root, gpu=gpu)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    obj._apply_search_params()
    return obj


def _recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth)
    ]
    return float(np.mean(hits)) if hits else 1.0


def calibrate(index: ItemIndex, queries: Any = None, *, k: int = CALIBRATION_K) -> dict[str, Any] | None:
    """Choose the search parameter an approximate index was built without (``nprobe`` / ``ef_search``).

    Measures recall@``k`` of :meth:`ItemIndex.search` (re-ranking included) against an exact scan for
    ``queries`` (default: :data:`CALIBRATION_QUERIES` item vectors sampled with the index seed, each
    excluding itself, i.e. "items like this one") at 1, 2, 4, ... (ivf ``nprobe``, up to ``nlist``) or
    16, 32, ... (hnsw ``ef_search``, up to 4096), bisects (3 steps) between the last failing and the first
    passing value, and keeps the smallest value found reaching ``target_recall``. The choice is written into ``index.manifest["params"]``.

    Returns:
        What was done, for the manifest (None when nothing needed calibrating): parameter, value, measured
        recall, target, number and kind of queries.
    """
    p = index.manifest["params"]
    name = {"ivf": "nprobe", "hnsw": "ef_search"}.get(index.kind)
    if name is None or p.get(name) is not None:
        return None
    target = float(p["target_recall"])
    if queries is None:
        rng = np.random.default_rng(p["seed"])
        rows = np.sort(rng.choice(index.count, size=min(CALIBRATION_QUERIES, index.count), replace=False))
        q = np.asarray(index.vectors[rows], dtype=np.float32)
        exclude: list[set[int]] | None = [{int(r)} for r in rows]
        kind_of_queries = "item vectors (each excluding itself)"
    else:
        q = as_queries(queries, index.dim)[:CALIBRATION_QUERIES]
        if index.metric == "cosine":
            q = normalize_rows(q)
        exclude = None
        kind_of_queries = "given queries"
    truth = index._exact(q, k, exclude or [set()] * len(q))[1]
    if index.kind == "ivf":
        steps = [v for v in (2**i for i in range(20)) if v < p["nlist"]] + [p["nlist"]]
    else:
        steps = [16 * 2**i for i in range(9)]

    def measure(v: int) -> float:
        index.manifest["params"] = {**p, name: v}
        index._apply_search_params()
        return _recall_at(index.search(q, k, exclude)[1], truth)

    chosen, recall, prev = steps[-1], 0.0, None
    for v in steps:
        r = measure(v)
        if r >= target:
            chosen, recall = v, r
            lo = prev
            for _ in range(3):  # bisect between the last failing and the first passing value
                if lo is None or chosen - lo <= 1:
                    break
                mid = (lo + chosen) // 2
                r_mid = measure(mid)
                if r_mid >= target:
                    chosen, recall = mid, r_mid
                else:
                    lo = mid
            break
        prev, recall = v, r
    index.manifest["params"] = {**p, name: int(chosen)}
    index._apply_search_params()
    if recall < target:
        log.warning(
            "%s: even %s=%d reaches recall@%d %.3f < target %.2f on calibration queries.",
            index.kind,
            name,
            chosen,
            k,
            recall,
            target,
        )
    return {
        "param": name,
        "value": int(chosen),
        "recall@10": round(recall, 4),
        "target_recall": target,
        "queries": len(q),
        "query_kind": kind_of_queries,
    }


def store_source(store: Any, rows: int | None = None) -> dict[str, Any]:
    """The manifest ``source`` of an index built from an embedding store (its path and fingerprint).

    Args:
        store: an opened :class:`mmrec.store.EmbeddingStore`.
        rows: how many (valid) rows were indexed.
    """
    return {
        "type": "store",
        "path": str(store.path),
        "fingerprint": store.fingerprint,
        "encoder": store.manifest.get("encoder"),
        "dim": store.dim,
        "rows": int(rows if rows is not None else store.num_items),
    }
