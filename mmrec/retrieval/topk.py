"""Top-k selection over candidate rows, with exclusions and deterministic tie-breaking (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec.retrieval.index_params import ItemIndexError


def as_queries(queries: Any, dim: int) -> np.ndarray:
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


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def topk_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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


def excluded_mask(rows: np.ndarray, exclude: Sequence[set[int]]) -> np.ndarray:
    """``(B, C)`` bool: True where ``rows[b, c]`` is in ``exclude[b]``."""
    mask = np.zeros(rows.shape, dtype=bool)
    for b, ex in enumerate(exclude):
        if ex:
            mask[b] = np.isin(rows[b], np.fromiter(ex, dtype=np.int64, count=len(ex)))
    return mask
