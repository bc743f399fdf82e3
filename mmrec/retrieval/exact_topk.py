"""Exact top-k by inner product over the whole item table with torch, chunked over the catalogue, with the
query's own history masked: what the recommender serves without a faiss index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def exact_topk(
    q: torch.Tensor,
    items: torch.Tensor,
    histories: Sequence[Sequence[int]],
    k: int,
    exclude_history: bool,
    chunk: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items by ``q @ items.T``, row 0 of ``items`` (padding) never returned.

    Args:
        q: ``(B, d)`` query vectors.
        items: ``(N+1, d)`` item table, row ``i`` = item index ``i`` (row 0 padding).
        histories: each query's item indices (1..N), masked when ``exclude_history``.
        k: items per query.
        exclude_history: mask the history items.
        chunk: item rows scored at once (bounds memory on large catalogues).

    Returns:
        ``(scores (B, k) float32, item indices (B, k))``; missing results (catalogue smaller than ``k`` +
        history) hold ``-inf`` / 0.

    Example:
        >>> items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> scores, idx = exact_topk(torch.tensor([[1.0, 0.5]]), items, [[3]], k=2, exclude_history=True)
        >>> idx.tolist(), scores.tolist()
        ([[1, 2]], [[1.0, 0.5]])
    """
    b = q.shape[0]
    items = items.to(q.device)
    best_s = torch.full((b, 0), float("-inf"), device=q.device)
    best_i = torch.zeros((b, 0), dtype=torch.long, device=q.device)
    rows = (
        torch.cat([torch.full((len(h),), r, dtype=torch.long) for r, h in enumerate(histories)])
        if exclude_history
        else None
    )
    cols = (
        torch.cat([torch.as_tensor(list(h), dtype=torch.long) for h in histories])
        if exclude_history
        else None
    )
    for start in range(1, items.shape[0], chunk):
        stop = min(start + chunk, items.shape[0])
        s = q @ items[start:stop].T
        if rows is not None and cols is not None:
            sel = (cols >= start) & (cols < stop)
            s[rows[sel].to(q.device), (cols[sel] - start).to(q.device)] = float("-inf")
        top = s.topk(min(k, stop - start), dim=1)
        cand_s = torch.cat([best_s, top.values], 1)
        cand_i = torch.cat([best_i, top.indices + start], 1)
        keep = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
        best_s, best_i = keep.values, cand_i.gather(1, keep.indices)
    scores = best_s.cpu().numpy().astype(np.float32)
    idx = best_i.cpu().numpy()
    if scores.shape[1] < k:
        scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, k - idx.shape[1])))
    return scores, np.where(np.isfinite(scores), idx, 0)
