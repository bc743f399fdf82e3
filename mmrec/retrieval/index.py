"""A faiss index over item vectors, with exact re-ranking, history exclusion and a self-describing folder.

Kinds (``kind=``):

- ``flat``: exact maximum inner product (``IndexFlatIP``). ``auto`` picks it up to
  :data:`AUTO_FLAT_MAX_ITEMS` items (100k): at that size an exact scan costs ~6.4 MFLOP per query,
  thousands of batched queries per second on a CPU, and nothing can be missed.
- ``ivf`` (``auto`` above 100k items): an inverted file with ``nlist`` k-means cells probing ``nprobe``
  cells per query; its codes (``encoding``) default to 4-bit product quantisation scanned with faiss's
  SIMD "fast scan" kernels (``IVF<nlist>,PQ<m>x4fs``, ``m`` sub-quantisers, 1 dimension each up to 128:
  32 bytes per 64-d item). The codes only shortlist candidates (``rerank_factor`` 8 x k of them), which
  are then re-scored exactly (below), so their coarseness costs little recall while the scan runs several
  times faster than over exact or 8-bit codes: that is what lets a probe reach enough cells for recall
  >= 0.95 at >= 10x the speed of an exact scan on unevenly clustered 1M-item catalogues (1M x 64 on 2
  cores: 13x faiss's exact search at recall@10 0.954 with ``target_recall=0.95``, 9.6x at 0.976 with the
  default 0.97; ``bench/README.md``). ``flat``/``sq8``/``sq4``/``fp16`` codes are available as ``encoding``.
  IVF is chosen over HNSW as the large-catalogue default because (1) it is trained on a sample and
  filled in batches from a memory map, so building 1M x 64 takes well under a minute with bounded
  memory, where HNSW's graph build took ~2 minutes per 200k items on 2 CPU cores in our measurements;
  (2) ``nprobe`` trades speed for recall at query time without a rebuild; (3) with ``encoding=sq8`` /
  ``flat`` it runs on faiss-gpu (4-bit fast scan has no GPU kernel in faiss, so a ``pq4fs`` index always
  searches on CPU; on a machine where faiss-gpu sees a GPU the default encoding is ``sq8`` instead).
- ``hnsw``: a navigable small-world graph (``HNSW<M>,Flat``, inner product); very fast queries, slower
  builds, no GPU. Use it when queries matter more than build time.

Search parameters of approximate kinds (ivf ``nprobe``, hnsw ``ef_search``) are calibrated at build time
unless given: the smallest value whose recall@10 against an exact scan reaches ``target_recall`` (0.97 by
default, a margin above the usual 0.95 operating point because a calibration on 256 queries is only
accurate to about +-0.01; pass ``target_recall=0.95`` for more speed) on 256 calibration queries (the
model's user vectors when built from a checkpoint, else sampled item vectors), recorded in the manifest
(:func:`calibrate`). So the speed/recall trade-off follows the data instead of a fixed rule of thumb; pass
``nprobe`` / ``ef_search`` to fix them.

Approximate kinds re-rank: they fetch ``k * rerank_factor`` candidates, then re-score the candidates
exactly against the stored vectors (``vectors.npy``, memory-mapped), so returned scores are exact inner
products (or cosines with ``metric="cosine"``). Excluded items (a user's history) are removed by
over-fetching (``k + len(exclude)`` before re-ranking) and filtering; a query that still has fewer than
``k`` results while more items exist is retried with a 4x larger fetch, then by an exact scan, so ``k``
results always come back when the catalogue has them.

Saved folder (:meth:`ItemIndex.save`, written to a temporary name and renamed when complete):
``index.faiss``, ``vectors.npy`` (``(N, d)`` float32, row ``r`` = ``keys[r]``), ``keys.parquet``
(``item_id``), ``manifest.json`` (kind, params, metric, dim, count, build seconds, faiss version and the
``source``: where the vectors came from, see :mod:`mmrec.retrieval.recommender`).

Example:
    >>> import numpy as np
    >>> vecs = np.eye(4, 3, dtype=np.float32)
    >>> idx = build_index(vecs, ["a", "b", "c", "d"], kind="flat")
    >>> scores, rows = idx.search(np.array([[1.0, 0.5, 0.0]], np.float32), k=2, exclude=[{0}])
    >>> [idx.item_ids[r] for r in rows[0]], scores[0].tolist()
    (['b', 'c'], [0.5, 0.0])
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from mmrec import __version__
from mmrec.store.reader import write_keys

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU builds are noise here
import faiss  # noqa: E402  (after the line above, which silences its import-time logging)

log = logging.getLogger(__name__)

INDEX_FORMAT = "mmrec-item-index"
INDEX_VERSION = 1
KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf")
METRICS: tuple[str, ...] = ("ip", "cosine")
#: ``kind="auto"`` uses exact search up to this many items, ``ivf`` above.
AUTO_FLAT_MAX_ITEMS = 100_000
#: Rows copied / added per step while building (bounded memory).
BUILD_BATCH_ROWS = 65_536
#: faiss-gpu cannot return more than this many neighbours per query.
GPU_MAX_K = 2048

Kind = Literal["auto", "flat", "hnsw", "ivf"]
Metric = Literal["ip", "cosine"]

# Parameters per kind, with their defaults (None = derived from the catalogue size at build time).
# Build parameters fix the index; search parameters (nprobe, ef_search, rerank_factor) can be changed
# after loading (ItemIndex.load(..., params=...) or ItemIndex.set_search_params).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {
        "nlist": None,
        "nprobe": None,
        "encoding": "pq4fs",
        "pq_m": None,
        "train_size": None,
        "rerank_factor": None,
        "seed": 0,
        "target_recall": 0.97,
    },
    "hnsw": {
        "M": 32,
        "ef_construction": 80,
        "ef_search": None,
        "rerank_factor": 2,
        "seed": 0,
        "target_recall": 0.97,
    },
}
#: Queries used to calibrate ``nprobe`` / ``ef_search`` when they are not given, and the k they measure.
CALIBRATION_QUERIES = 256
CALIBRATION_K = 10
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "ivf": ("nprobe", "rerank_factor"),
    "hnsw": ("ef_search", "rerank_factor"),
}
_IVF_ENCODINGS = {"pq4fs": None, "flat": None, "sq8": "QT_8bit", "sq4": "QT_4bit", "fp16": "QT_fp16"}
#: Candidates re-scored exactly per result (``rerank_factor``) when not given: 4-bit PQ codes only rank
#: coarsely, so they shortlist more; scalar / exact codes rank almost exactly.
_DEFAULT_RERANK = {"pq4fs": 8.0}
#: Most sub-quantisers of a ``pq4fs`` code (one per dimension up to this; beyond, several dimensions each).
PQ_MAX_SUBQUANTIZERS = 128


class ItemIndexError(ValueError):
    """Raised when an index cannot be built, loaded or queried as asked (the message says how to fix it)."""


# --------------------------------------------------------------------------------------------- helpers
def choose_kind(num_items: int, kind: str = "auto") -> str:
    """Resolve ``kind="auto"`` from the catalogue size: ``flat`` up to 100k items, ``ivf`` above.

    Example:
        >>> choose_kind(50_000), choose_kind(1_000_000), choose_kind(10, "hnsw")
        ('flat', 'ivf', 'hnsw')
    """
    if kind not in KINDS:
        raise ItemIndexError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if kind != "auto":
        return kind
    return "flat" if num_items <= AUTO_FLAT_MAX_ITEMS else "ivf"


def default_nlist(num_items: int) -> int:
    """IVF cells: the power of two nearest ``2 * sqrt(N)``, at most ``N / 39`` (faiss wants >= 39 training
    points per cell) and at least 1. 1M items -> 2048, 100k -> 512, 20k -> 256.
    """
    target = 2.0 * math.sqrt(max(1, num_items))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and nlist * 39 > num_items:
        nlist //= 2
    return max(1, nlist)


def default_pq_m(dim: int) -> int:
    """Sub-quantisers of a ``pq4fs`` code: the largest divisor of ``dim`` up to 128 (64-d -> 64, 384 -> 128,
    768 -> 128, 100 -> 100).

    Example:
        >>> default_pq_m(64), default_pq_m(384), default_pq_m(257)
        (64, 128, 1)
    """
    return max(m for m in range(1, min(dim, PQ_MAX_SUBQUANTIZERS) + 1) if dim % m == 0)


def resolve_params(kind: str, num_items: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``kind`` overridden by ``params``, with derived values filled in and every value checked.

    Raises:
        ItemIndexError: unknown parameter names (listing the valid ones) or invalid values.

    Example:
        >>> resolve_params("ivf", 1_000_000)["nlist"], resolve_params("ivf", 1_000_000, {"nprobe": 64})["nprobe"]
        (2048, 64)
        >>> resolve_params("ivf", 1_000_000)["nprobe"] is None  # calibrated at build time
        True
    """
    if kind not in DEFAULT_PARAMS:
        raise ItemIndexError(f"kind must be one of flat, hnsw, ivf here; got {kind!r}.")
    out = dict(DEFAULT_PARAMS[kind])
    unknown = sorted(set(params or {}) - set(out))
    if unknown:
        valid = ", ".join(sorted(out)) or "none"
        raise ItemIndexError(f"unknown parameter(s) {unknown} for kind {kind!r}; valid parameters: {valid}.")
    out.update(dict(params or {}))
    if kind == "ivf":
        out["nlist"] = int(out["nlist"] or default_nlist(num_items))
        if out["nlist"] < 1 or out["nlist"] > num_items:
            raise ItemIndexError(f"nlist must be in [1, number of items = {num_items}]; got {out['nlist']}.")
        if out["nprobe"] is not None:
            out["nprobe"] = min(int(out["nprobe"]), out["nlist"])
            if out["nprobe"] < 1:
                raise ItemIndexError(f"nprobe must be >= 1; got {out['nprobe']}.")
        if out["encoding"] not in _IVF_ENCODINGS:
            raise ItemIndexError(
                f"encoding must be one of {sorted(_IVF_ENCODINGS)}; got {out['encoding']!r}."
            )
        if out["pq_m"] is not None:
            out["pq_m"] = int(out["pq_m"])
            if out["pq_m"] < 1:
                raise ItemIndexError(f"pq_m must be >= 1 (and divide the dimension); got {out['pq_m']}.")
        out["train_size"] = int(out["train_size"] or min(num_items, max(64 * out["nlist"], 10_000)))
        out["train_size"] = min(max(out["train_size"], out["nlist"]), num_items)
    if kind == "hnsw":
        for name in ("M", "ef_construction", "ef_search"):
            if out[name] is None:
                continue
            out[name] = int(out[name])
            if out[name] < 2:
                raise ItemIndexError(f"{name} must be >= 2; got {out[name]}.")
    if kind != "flat":
        out["seed"] = int(out["seed"])
        out["target_recall"] = float(out["target_recall"])
        if not 0 < out["target_recall"] <= 1:
            raise ItemIndexError(f"target_recall must be in (0, 1]; got {out['target_recall']}.")
    if "rerank_factor" in out:
        if out["rerank_factor"] is None:
            out["rerank_factor"] = _DEFAULT_RERANK.get(out.get("encoding"), 2.0)
        out["rerank_factor"] = float(out["rerank_factor"])
        if out["rerank_factor"] < 1:
            raise ItemIndexError(
                f"rerank_factor must be >= 1 (candidates = k * rerank_factor); got {out['rerank_factor']}."
            )
    return out


def gpu_available() -> bool:
    """True when faiss was built with GPU support (faiss-gpu) and sees at least one GPU."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - exotic builds
        return False


_GPU_RESOURCES: Any = None


def _cpu_only_reason(kind: str, params: Mapping[str, Any]) -> str | None:
    """Why an index of this kind / encoding cannot run on faiss-gpu (None when it can)."""
    if kind == "hnsw":
        return "faiss has no GPU HNSW; the hnsw index runs on CPU."
    if kind == "ivf" and params.get("encoding") == "pq4fs":
        return (
            "faiss has no GPU kernel for 4-bit fast-scan PQ; this ivf index runs on CPU "
            "(build it with --params.encoding=sq8 for a GPU index)."
        )
    return None


def _to_gpu(
    index: faiss.Index, kind: str, gpu: bool | None, params: Mapping[str, Any] | None = None
) -> tuple[faiss.Index, bool]:
    """Move ``index`` to GPU 0 when asked (``gpu=True``) or when possible (``gpu=None``).

    HNSW and 4-bit fast-scan IVF stay on CPU (a warning when ``gpu=True`` asked otherwise).
    """
    global _GPU_RESOURCES
    if gpu is False:
        return index, False
    reason = _cpu_only_reason(kind, params or {})
    if reason is not None:
        if gpu:
            log.warning(reason)
        return index, False
    if not gpu_available():
        if gpu:
            raise ItemIndexError(
                "gpu=True but faiss sees no GPU (faiss-cpu installed, or no device): install faiss-gpu "
                "(`pip install mmrec[gpu]`) on a GPU machine, or pass gpu=None / --device cpu."
            )
        return index, False
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index), True


def _to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if "Gpu" in type(index).__name__ else index


def _as_queries(queries: Any, dim: int) -> np.ndarray:
    if hasattr(queries, "detach"):  # a torch tensor
        queries = queries.detach().to("cpu").float().numpy()
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ItemIndexError(f"queries must be (B, {dim}) (the index dimension); got shape {tuple(q.shape)}.")
    if not np.isfinite(q).all():
        raise ItemIndexError("queries contain NaN or inf; check the model's query vectors.")
    return np.ascontiguousarray(q)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _topk_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the ``k`` best (score desc, row asc) of ``(B, C)`` candidates; invalid ones hold ``-inf``.

    A partial selection (``argpartition``) keeps ``k`` columns before the full sort; queries whose k-th best
    score is tied with a left-out candidate are sorted in full instead, so ties always resolve to the lower
    row and the result does not depend on the candidates' order.
    """
    c = scores.shape[1]
    if c > k and scores.size:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(scores, part, 1)
        kth = top_s.min(axis=1, keepdims=True)
        tied = (scores == kth).sum(axis=1) != (top_s == kth).sum(axis=1)
        top_r = np.take_along_axis(rows, part, 1)
        if tied.any():
            full_s, full_r = _sort_rows(scores[tied], rows[tied], k)
            top_s[tied], top_r[tied] = full_s, full_r
        scores, rows = top_s, top_r
    return _sort_rows(scores, rows, k)


def _sort_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each query's candidates sorted by (score desc, row asc)."""
    order = (np.lexsort((rows, -scores), axis=1) if scores.size else np.zeros_like(rows))[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _excluded_mask(rows: np.ndarray, exclude: Sequence[set[int]]) -> np.ndarray:
    """``(B, C)`` bool: True where ``rows[b, c]`` is in ``exclude[b]``."""
    mask = np.zeros(rows.shape, dtype=bool)
    for b, ex in enumerate(exclude):
        if ex:
            mask[b] = np.isin(rows[b], np.fromiter(ex, dtype=np.int64, count=len(ex)))
    return mask


# --------------------------------------------------------------------------------------------- the index
@dataclass
class ItemIndex:
    """A searchable item index: a faiss index, the exact vectors it was built from, and its item ids.

    Build one with :func:`build_index`, reopen a saved one with :meth:`load`.

    Attributes:
        index: the faiss index (CPU or GPU).
        vectors: ``(N, d)`` float32 vectors (memory-mapped when loaded), used for exact re-ranking and
            the exact fallback; normalised when ``metric == "cosine"``.
        item_ids: ``N`` item ids; row ``r`` of every result is ``item_ids[r]``.
        manifest: what :meth:`save` writes to ``manifest.json``.
        path: the folder it was loaded from / saved to (None while only in memory).
    """

    index: Any
    vectors: np.ndarray
    item_ids: list[str]
    manifest: dict[str, Any]
    path: Path | None = None
    on_gpu: bool = False
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.manifest.get("source") or {})

    def row_of(self, item_id: str) -> int:
        """Row of ``item_id`` (KeyError when absent)."""
        if self._row_of is None:
            self._row_of = {k: i for i, k in enumerate(self.item_ids)}
        return self._row_of[item_id]

    def set_search_params(self, **params: Any) -> None:
        """Change query-time parameters (``nprobe`` for ivf, ``ef_search`` for hnsw, ``rerank_factor``).

        Example:
            >>> idx.set_search_params(nprobe=64)  # doctest: +SKIP
        """
        allowed = SEARCH_PARAMS[self.kind]
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ItemIndexError(
                f"{bad} cannot be changed on a built {self.kind!r} index; search parameters: {list(allowed) or 'none'} "
                "(build parameters need a rebuild: `mmrec index ... --overwrite`)."
            )
        merged = resolve_params(self.kind, self.count, {**self.manifest["params"], **params})
        self.manifest["params"] = merged
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        p = self.manifest["params"]
        if self.kind == "ivf" and p.get("nprobe") is not None:
            faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", int(p["nprobe"]))
        elif self.kind == "hnsw" and p.get("ef_search") is not None:
            self.index.hnsw.efSearch = int(p["ef_search"])

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: Any,
        k: int,
        exclude: Sequence[set[int]] | None = None,
        *,
        batch_size: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query by inner product (exact scores), skipping excluded rows.

        Args:
            queries: ``(B, d)`` float array or tensor (a ``(d,)`` vector is one query).
            k: results per query.
            exclude: per query, a set of rows never to return (e.g. the user's history), or None.
            batch_size: queries searched per faiss call.

        Returns:
            ``(scores (B, k) float32, rows (B, k) int64)``, best first (ties: lower row first). ``k`` is
            honoured whenever the catalogue has ``k`` non-excluded items; otherwise the tail holds
            ``-inf`` / ``-1``.

        Example:
            >>> scores, rows = idx.search(user_vecs, k=10, exclude=[{3, 7}, set()])  # doctest: +SKIP
        """
        if isinstance(k, bool) or int(k) < 1:
            raise ItemIndexError(f"k must be a positive integer; got {k!r}.")
        k = int(k)
        q = _as_queries(queries, self.dim)
        if self.metric == "cosine":
            q = _normalize_rows(q)
        b_total = q.shape[0]
        no_exclusions = exclude is None
        if exclude is None:
            exclude = [set()] * b_total
        if len(exclude) != b_total:
            raise ItemIndexError(f"exclude must hold one set per query ({b_total}); got {len(exclude)}.")
        out_s = np.full((b_total, k), -np.inf, dtype=np.float32)
        out_r = np.full((b_total, k), -1, dtype=np.int64)
        for start in range(0, b_total, batch_size):
            sl = slice(start, min(start + batch_size, b_total))
            ex = list(exclude[sl]) if no_exclusions else [set(e) for e in exclude[sl]]
            s, r = self._search_batch(q[sl], k, ex)
            out_s[sl], out_r[sl] = s, r
        return out_s, out_r

    def _search_batch(self, q: np.ndarray, k: int, exclude: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
        n = self.count
        b = q.shape[0]
        # how many results each query can have: items that exist and are not excluded
        n_excl = np.array([sum(1 for r in e if 0 <= r < n) if e else 0 for e in exclude], dtype=np.int64)
        want = np.minimum(k, n - n_excl)
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_r = np.full((b, k), -1, dtype=np.int64)
        # group queries by fetch size (powers of two), so one long history does not inflate every query
        fetch = np.array([1 << max(0, int(k + e - 1).bit_length()) for e in n_excl], dtype=np.int64)
        pending = np.arange(b)
        while pending.size:
            f = int(fetch[pending].min())
            group = pending[fetch[pending] == f]
            s, r = self._fetch(q[group], f, [exclude[i] for i in group], k)
            out_s[group], out_r[group] = s, r
            got = (r >= 0).sum(axis=1)
            short = group[got < want[group]]
            done_fetch = f * self._candidate_factor() >= n
            if short.size and done_fetch:
                # everything was fetched and some queries still miss results (ivf probes too few cells):
                # exact scan for them
                s2, r2 = self._exact(q[short], k, [exclude[i] for i in short])
                out_s[short], out_r[short] = s2, r2
                short = short[:0]
            fetch[short] = f * 4  # retried with a bigger fetch; satisfied queries leave `pending`
            pending = pending[fetch[pending] != f]
        return out_s, out_r

    def _candidate_factor(self) -> float:
        return float(self.manifest["params"].get("rerank_factor", 1.0)) if self.kind != "flat" else 1.0

    def _fetch(self, q: np.ndarray, f: int, exclude: list[set[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Fetch ``f`` (x rerank_factor for approximate kinds) candidates, drop excluded, re-rank, keep ``k``."""
        n = self.count
        c = min(n, max(1, math.ceil(f * self._candidate_factor())))
        if self.on_gpu and c > GPU_MAX_K:
            return self._exact(q, k, exclude)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(self.manifest["params"]["ef_search"] or 16), c)
        scores, rows = self.index.search(q, c)
        rows = rows.astype(np.int64, copy=False)
        invalid = (rows < 0) | _excluded_mask(rows, exclude)
        if self.kind != "flat":
            scores = self._rescore(q, rows, invalid)
        scores = np.where(invalid, -np.inf, scores).astype(np.float32, copy=False)
        rows = np.where(invalid, -1, rows)
        s, r = _topk_rows(scores, rows, min(k, c))
        if s.shape[1] < k:
            s = np.pad(s, ((0, 0), (0, k - s.shape[1])), constant_values=-np.inf)
            r = np.pad(r, ((0, 0), (0, k - r.shape[1])), constant_values=-1)
        r = np.where(np.isfinite(s), r, -1)
        return s, r

    def _rescore(self, q: np.ndarray, rows: np.ndarray, invalid: np.ndarray) -> np.ndarray:
        """Exact inner products ``(B, C)`` of queries ``q (B, d)`` with candidates ``rows (B, C)``.

        Read straight from the stored vectors (a memory map once saved) by faiss's multi-threaded
        gather-and-dot kernel when they are a C-contiguous float32 array, else with numpy.
        """
        rows = np.ascontiguousarray(np.where(invalid, 0, rows), dtype=np.int64)
        vecs = self.vectors
        if isinstance(vecs, np.ndarray) and vecs.dtype == np.float32 and vecs.flags.c_contiguous:
            out = np.empty(rows.shape, dtype=np.float32)
            q = np.ascontiguousarray(q, dtype=np.float32)
            faiss.fvec_inner_products_by_idx(
                faiss.swig_ptr(out),
                faiss.swig_ptr(q),
                faiss.swig_ptr(vecs),
                faiss.swig_ptr(rows),
                self.dim,
                rows.shape[0],
                rows.shape[1],
            )
            return out
        gathered = np.asarray(np.take(vecs, rows.ravel(), axis=0), dtype=np.float32)
        return np.einsum("bcd,bd->bc", gathered.reshape(*rows.shape, self.dim), q, optimize=False)

    def _exact(
        self, q: np.ndarray, k: int, exclude: list[set[int]], chunk: int = BUILD_BATCH_ROWS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by scanning the stored vectors in chunks (bounded memory)."""
        b = q.shape[0]
        best_s = np.full((b, 0), -np.inf, dtype=np.float32)
        best_r = np.full((b, 0), -1, dtype=np.int64)
        for start in range(0, self.count, chunk):
            block = np.asarray(self.vectors[start : start + chunk], dtype=np.float32)
            s = q @ block.T
            r = np.broadcast_to(np.arange(start, start + block.shape[0], dtype=np.int64), s.shape)
            s = np.where(_excluded_mask(r, exclude), -np.inf, s).astype(np.float32)
            best_s, best_r = _topk_rows(np.concatenate([best_s, s], 1), np.concatenate([best_r, r], 1), k)
        if best_s.shape[1] < k:
            best_s = np.pad(best_s, ((0, 0), (0, k - best_s.shape[1])), constant_values=-np.inf)
            best_r = np.pad(best_r, ((0, 0), (0, k - best_r.shape[1])), constant_values=-1)
        return best_s, np.where(np.isfinite(best_s), best_r, -1)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index folder atomically (temporary folder, renamed when complete).

        Args:
            path: the folder to create.
            overwrite: replace an existing folder.

        Returns:
            The folder.

        Example:
            >>> idx.save("indexes/demo")  # doctest: +SKIP
        """
        root = Path(path).expanduser().resolve()
        if self.path is not None and root == self.path:
            return root
        if root.exists() and not overwrite:
            raise ItemIndexError(
                f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
            )
        tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            out = np.lib.format.open_memmap(
                tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=self.vectors.shape
            )
            for start in range(0, self.count, BUILD_BATCH_ROWS):
                out[start : start + BUILD_BATCH_ROWS] = self.vectors[start : start + BUILD_BATCH_ROWS]
            out.flush()
            del out
            _write_index_files(tmp, self.index, self.item_ids, self.manifest)
            _commit(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = root
        self.vectors = np.load(root / "vectors.npy", mmap_mode="r")
        return root

    @staticmethod
    def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
        """``manifest.json`` of a saved index (without loading it)."""
        root = Path(path).expanduser().resolve()
        mpath = root / "manifest.json"
        if not mpath.is_file():
            if not root.exists():
                raise ItemIndexError(
                    f"index folder {root} does not exist; build it with `mmrec index --ckpt CKPT --out {root}`."
                )
            raise ItemIndexError(
                f"{root} is not a complete mmrec index (no manifest.json); rebuild it with `mmrec index ... --out {root} --overwrite`."
            )
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("format") != INDEX_FORMAT:
            raise ItemIndexError(
                f"{mpath} is not an mmrec item index manifest (format {manifest.get('format')!r})."
            )
        if int(manifest.get("version", 0)) > INDEX_VERSION:
            raise ItemIndexError(
                f"{root} was written by a newer mmrec (index version {manifest['version']}); upgrade mmrec."
            )
        return manifest

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        params: Mapping[str, Any] | None = None,
        threads: int | None = None,
        gpu: bool | None = None,
    ) -> ItemIndex:
        """Open a saved index folder; ``vectors.npy`` and (where faiss can) ``index.faiss`` are memory-mapped.

        Args:
            path: the folder written by :meth:`save` / ``mmrec index``.
            params: search parameters to override (``nprobe``, ``ef_search``, ``rerank_factor``).
            threads: faiss CPU threads (None = faiss default, all cores).
            gpu: move the index to a GPU (None = when faiss-gpu sees one, True = require, False = never).

        Raises:
            ItemIndexError: missing / incomplete / inconsistent folder.

        Example:
            >>> idx = ItemIndex.load("indexes/demo", params={"nprobe": 32})  # doctest: +SKIP
        """
        root = Path(path).expanduser().resolve()
        manifest = cls.read_manifest(root)
        set_threads(threads)
        vectors = np.load(root / "vectors.npy", mmap_mode="r")
        item_ids = pq.read_table(root / "keys.parquet").column("item_id").to_pylist()
        index = _read_faiss(root / "index.faiss")
        n, d = int(manifest["count"]), int(manifest["dim"])
        if vectors.shape != (n, d) or len(item_ids) != n or index.ntotal != n or index.d != d:
            raise ItemIndexError(
                f"{root} is inconsistent: manifest {n} x {d}, vectors {vectors.shape}, {len(item_ids)} keys, "
                f"faiss {index.ntotal} x {index.d}. Rebuild it with `mmrec index ... --overwrite`."
            )
        index, on_gpu = _to_gpu(index, manifest["kind"], gpu, manifest.get("params"))
        obj = cls(
            index=index, vectors=vectors, item_ids=item_ids, manifest=manifest, path=root, on_gpu=on_gpu
        )
        obj._apply_search_params()
        if params:
            obj.set_search_params(**params)
        return obj


def _read_faiss(path: Path) -> Any:
    """Read ``index.faiss`` memory-mapped when this faiss build can (flat: ``IO_FLAG_MMAP_IFC``)."""
    for flag_name in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
        flag = getattr(faiss, flag_name, None)
        if flag is None:
            continue
        try:
            return faiss.read_index(str(path), flag)
        except RuntimeError:
            continue
    return faiss.read_index(str(path))


def _write_index_files(
    folder: Path, index: Any, item_ids: Sequence[str], manifest: Mapping[str, Any]
) -> None:
    faiss.write_index(_to_cpu(index), str(folder / "index.faiss"))
    write_keys(folder, item_ids)
    with open(folder / "manifest.json", "w", encoding="utf-8") as f:  # written last
        json.dump(dict(manifest), f, indent=2, default=str)
        f.write("\n")


def _commit(tmp: Path, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)


def set_threads(threads: int | None) -> None:
    """Set faiss's OpenMP threads (None leaves the default: all cores)."""
    if threads is not None:
        if threads < 1:
            raise ItemIndexError(f"threads must be >= 1; got {threads}.")
        faiss.omp_set_num_threads(int(threads))


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
        index = faiss.IndexHNSWFlat(dim, int(p["M"]), metric)
        index.hnsw.efConstruction = int(p["ef_construction"])
        index.hnsw.efSearch = int(p["ef_search"] or 16)
        return index
    quantizer = faiss.IndexFlatIP(dim)
    qtype = _IVF_ENCODINGS[p["encoding"]]
    if p["encoding"] == "pq4fs":
        index = faiss.IndexIVFPQFastScan(quantizer, dim, int(p["nlist"]), int(p["pq_m"]), 4, metric)
        # faiss warns once per sub-quantiser (up to 128 lines) below 39 x 16 training vectors; build_index
        # says it once instead
        index.pq.cp.min_points_per_centroid = 1
    elif qtype is None:
        index = faiss.IndexIVFFlat(quantizer, dim, int(p["nlist"]), metric)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, int(p["nlist"]), getattr(faiss.ScalarQuantizer, qtype), metric
        )
    return index  # faiss's Python wrapper keeps `quantizer` alive as long as `index`


def faiss_description(kind: str, p: Mapping[str, Any]) -> str:
    """A faiss ``index_factory``-style name of the index, recorded in the manifest (e.g. ``IVF2048,PQ64x4fs``)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{p['M']},Flat"
    if p["encoding"] == "pq4fs":
        return f"IVF{p['nlist']},PQ{p['pq_m']}x4fs"
    return f"IVF{p['nlist']},{'Flat' if p['encoding'] == 'flat' else p['encoding'].upper()}"


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
    requested_kind, kind = kind, choose_kind(n, kind)
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
                block = _normalize_rows(block)
            if not zero_copy:
                dest[start : start + block.shape[0]] = block
        # 2. the faiss index: train on a sample (sorted rows: sequential reads of a memory map), add in batches
        index, on_gpu = _to_gpu(_new_faiss_index(kind, d, p), kind, gpu, p)
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
            _write_index_files(tmp, index, item_ids, manifest)
            _commit(tmp, root)
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
        q = _as_queries(queries, index.dim)[:CALIBRATION_QUERIES]
        if index.metric == "cosine":
            q = _normalize_rows(q)
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
