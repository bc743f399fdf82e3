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

The parts live in modules of their own and are re-exported here: kinds and parameters
(:mod:`mmrec.retrieval.index_params`, no faiss needed), faiss placement and threads
(:mod:`mmrec.retrieval.faiss_runtime`), top-k selection with exclusions (:mod:`mmrec.retrieval.topk`),
the index itself (:mod:`mmrec.retrieval.item_index`) and building / calibration
(:mod:`mmrec.retrieval.index_build`).

Example:
    >>> import numpy as np
    >>> vecs = np.eye(4, 3, dtype=np.float32)
    >>> idx = build_index(vecs, ["a", "b", "c", "d"], kind="flat")
    >>> scores, rows = idx.search(np.array([[1.0, 0.5, 0.0]], np.float32), k=2, exclude=[{0}])
    >>> [idx.item_ids[r] for r in rows[0]], scores[0].tolist()
    (['b', 'c'], [0.5, 0.0])
"""

from __future__ import annotations

from mmrec.retrieval.faiss_runtime import gpu_available, set_threads
from mmrec.retrieval.index_build import (
    CALIBRATION_K,
    CALIBRATION_QUERIES,
    build_index,
    calibrate,
    store_source,
)
from mmrec.retrieval.index_params import (
    AUTO_FLAT_MAX_ITEMS,
    DEFAULT_PARAMS,
    KINDS,
    METRICS,
    PQ_MAX_SUBQUANTIZERS,
    SEARCH_PARAMS,
    ItemIndexError,
    Kind,
    Metric,
    choose_kind,
    default_nlist,
    default_pq_m,
    faiss_description,
    resolve_params,
)
from mmrec.retrieval.item_index import BUILD_BATCH_ROWS, GPU_MAX_K, INDEX_FORMAT, INDEX_VERSION, ItemIndex

__all__ = [
    "AUTO_FLAT_MAX_ITEMS",
    "BUILD_BATCH_ROWS",
    "CALIBRATION_K",
    "CALIBRATION_QUERIES",
    "DEFAULT_PARAMS",
    "GPU_MAX_K",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "KINDS",
    "METRICS",
    "PQ_MAX_SUBQUANTIZERS",
    "SEARCH_PARAMS",
    "ItemIndex",
    "ItemIndexError",
    "Kind",
    "Metric",
    "build_index",
    "calibrate",
    "choose_kind",
    "default_nlist",
    "default_pq_m",
    "faiss_description",
    "gpu_available",
    "resolve_params",
    "set_threads",
    "store_source",
]
