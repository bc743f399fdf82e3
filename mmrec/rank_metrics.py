"""Full-ranking and sampled accuracy metrics: ranks of held-out items and HR/Recall/NDCG/MRR from them (the conventions are in :mod:`mmrec.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: History to mask: ``(rows, cols)`` 1-D integer tensors, or a dense ``(B, N)`` bool mask, or ``None``.
ExcludeSpec = tuple[Tensor, Tensor] | Tensor | None


_METRIC_KINDS = ("hr", "recall", "ndcg")


# --------------------------------------------------------------------------------------------- checks
def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(
                f"ks must be positive integers (cut-offs such as (5, 10, 20)); got {tuple(ks)!r}."
            )
        out.append(k)
    if not out:
        raise ValueError("ks is empty: give at least one cut-off, e.g. ks=(10,).")
    return tuple(sorted(set(out)))


def metric_names(ks: Sequence[int]) -> list[str]:
    """Names of the metrics computed for cut-offs ``ks``, in output order.

    Args:
        ks: cut-offs, e.g. ``(5, 10)``.

    Returns:
        ``["hr@5", "hr@10", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr"]`` for ``ks=(5, 10)``.

    Example:
        >>> metric_names((10,))
        ['hr@10', 'recall@10', 'ndcg@10', 'mrr']
    """
    ks = check_ks(ks)
    return [f"{kind}@{k}" for kind in _METRIC_KINDS for k in ks] + ["mrr"]


def check_scores_targets(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a (B, N) tensor (users x catalogue items); got {shape}.")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor; got {scores.dtype}. Cast with scores.float().")
    if not isinstance(targets, Tensor):
        targets = torch.as_tensor(targets)
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    if targets.dim() != 2 or targets.shape[0] != scores.shape[0]:
        raise ValueError(
            f"targets must be a (B, T) tensor of item columns with -1 padding, B = scores.shape[0] = "
            f"{scores.shape[0]}; got shape {tuple(targets.shape)}."
        )
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer item columns; got {targets.dtype}.")
    targets = targets.to(device=scores.device, dtype=torch.long)
    n = scores.shape[1]
    if targets.numel():
        bad = (targets < -1) | (targets >= n)
        if bool(bad.any()):
            raise ValueError(
                f"targets must be item columns in [0, {n}) or -1 for padding; found "
                f"{targets[bad][:5].tolist()}. Check that item indices match the columns of scores."
            )
        if targets.shape[1] > 1:
            srt = targets.sort(dim=1).values
            dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
            if bool(dup.any()):
                row = int(dup.any(dim=1).nonzero()[0, 0])
                raise ValueError(
                    f"targets of row {row} repeat an item ({targets[row].tolist()}); each held-out item "
                    "must appear once per row (deduplicate it, e.g. with torch.unique per user)."
                )
    # amax propagates NaN and is a fast reduction (isnan().any() materialises a (B, N) bool tensor).
    if scores.numel() and bool(torch.isnan(scores.amax())):
        raise ValueError("scores contain NaN; ranks would be meaningless. Check the model's output.")
    return scores, targets


def _ignore_tensor(ignore_columns: Sequence[int], n: int, device: torch.device) -> Tensor:
    cols = sorted({int(c) for c in ignore_columns})
    for c in cols:
        if not 0 <= c < n:
            raise ValueError(f"ignore_columns must be item columns in [0, {n}); got {c}.")
    return torch.tensor(cols, dtype=torch.long, device=device)


def _exclusion_pairs(
    exclude: ExcludeSpec, targets: Tensor, n: int, ignore: Tensor
) -> tuple[Tensor, Tensor] | None:
    """Deduplicated ``(rows, cols)`` to remove, minus targets and ignored columns (no double counting)."""
    if exclude is None:
        return None
    b = targets.shape[0]
    device = targets.device
    if isinstance(exclude, Tensor):
        if exclude.dtype != torch.bool or tuple(exclude.shape) != (b, n):
            raise ValueError(
                f"a dense exclude must be a ({b}, {n}) bool mask; got {exclude.dtype} {tuple(exclude.shape)}. "
                "Give the history sparsely as (rows, cols) instead."
            )
        rows, cols = exclude.to(device).nonzero(as_tuple=True)
    else:
        try:
            rows, cols = exclude
        except (TypeError, ValueError):
            raise ValueError(
                "exclude must be a pair (rows, cols) of 1-D integer tensors (row within the batch, item "
                f"column), a (B, N) bool mask, or None; got {type(exclude).__name__}."
            ) from None
        rows = torch.as_tensor(rows, device=device)
        cols = torch.as_tensor(cols, device=device)
        if rows.dim() != 1 or cols.dim() != 1 or rows.shape != cols.shape:
            raise ValueError(
                f"exclude rows and cols must be 1-D tensors of equal length; got {tuple(rows.shape)} "
                f"and {tuple(cols.shape)}."
            )
        if rows.is_floating_point() or cols.is_floating_point():
            raise TypeError("exclude rows and cols must be integer tensors (indices), not floats.")
        rows = rows.long()
        cols = cols.long()
        if rows.numel():
            if bool(((rows < 0) | (rows >= b)).any()):
                raise ValueError(f"exclude rows must index the batch, in [0, {b}); got values outside it.")
            if bool(((cols < 0) | (cols >= n)).any()):
                raise ValueError(f"exclude cols must be item columns in [0, {n}); got values outside it.")
    if rows.numel() == 0:
        return None
    lin = rows * n + cols
    keep = torch.ones_like(lin, dtype=torch.bool)
    if ignore.numel():
        keep &= ~torch.isin(cols, ignore)
    has_t = targets >= 0
    if bool(has_t.any()):
        row_ids = torch.arange(b, device=device).unsqueeze(1).expand_as(targets)
        keep &= ~torch.isin(lin, (row_ids * n + targets)[has_t])
    lin = torch.unique(lin[keep])
    if lin.numel() == 0:
        return None
    return lin // n, lin % n


# --------------------------------------------------------------------------------------------- ranks
_CPU_BLOCK_ELEMENTS = 1 << 20  # ~4 MiB float32 comparison buffer per row block on CPU


def _count_at_least(scores: Tensor, thresholds: Tensor) -> Tensor:
    """``counts[b, t] = #{j : scores[b, j] >= thresholds[b, t]}`` as a ``(B, T)`` long tensor.

    On CPU, comparisons are written into a reused float buffer of a cache-sized block of rows and summed
    as floats: several times faster than summing a freshly allocated ``(B, N)`` bool tensor. Float32
    counts are exact below 2**24 columns (float64 beyond). On other devices one bool pass per column.
    """
    b, n = scores.shape
    t = thresholds.shape[1]
    if scores.device.type != "cpu":
        return torch.stack([(scores >= thresholds[:, j : j + 1]).sum(dim=1) for j in range(t)], dim=1)
    acc = torch.float32 if n < 2**24 else torch.float64
    block = max(1, min(b, _CPU_BLOCK_ELEMENTS // max(n, 1)))
    buf = torch.empty((block, n), dtype=acc)
    out = torch.empty((b, t), dtype=acc)
    for start in range(0, b, block):  # blocks of rows, each fully vectorised
        stop = min(start + block, b)
        rows = scores[start:stop]
        for j in range(t):
            torch.ge(rows, thresholds[start:stop, j : j + 1], out=buf[: stop - start])
            out[start:stop, j] = buf[: stop - start].sum(dim=1)
    return out.long()


def target_ranks(
    scores: Tensor,
    targets: Tensor,
    exclude: ExcludeSpec = None,
    ignore_columns: Sequence[int] = (),
) -> Tensor:
    """1-based pessimistic rank of every target among the non-excluded, non-ignored items.

    ``rank = #{j valid : scores[b, j] >= scores[b, target]}`` (the target counts itself, so the best
    possible rank is 1 and ties rank the target below every tied item). Runs in ``O(B * N * T)`` on the
    device of ``scores``; ``scores`` is not modified or copied (on CPU a small reused float buffer holds the
    comparisons of a block of rows; on CUDA one ``(B, N)`` bool temporary per target column).

    Args:
        scores: ``(B, N)`` floating scores over the catalogue (higher = better). NaN is an error.
        targets: ``(B, T)`` (or ``(B,)``) integer item columns, ``-1`` padding, distinct per row.
        exclude: history to mask, ``(rows, cols)`` 1-D integer tensors or a ``(B, N)`` bool mask; entries
            that are targets of their row are kept (targets are never excluded).
        ignore_columns: columns never ranked, e.g. ``(0,)`` for the padding item. A target in an ignored
            column is an error.

    Returns:
        ``(B, T)`` long tensor of ranks in ``[1, N]``; ``0`` at padding positions.

    Raises:
        ValueError: wrong shapes, targets out of range or repeated in a row, NaN scores, a target in
            ``ignore_columns``.

    Example:
        >>> scores = torch.tensor([[0.1, 0.5, 0.5, 0.9]])
        >>> target_ranks(scores, torch.tensor([[1, -1]]))  # item 2 ties with item 1: pessimistic
        tensor([[3, 0]])
        >>> target_ranks(scores, torch.tensor([[1]]), exclude=(torch.tensor([0]), torch.tensor([3])))
        tensor([[2]])
    """
    scores, targets = check_scores_targets(scores, targets)
    b, n = scores.shape
    t = targets.shape[1]
    ignore = _ignore_tensor(ignore_columns, n, scores.device)
    has_t = targets >= 0
    if ignore.numel() and bool((torch.isin(targets, ignore) & has_t).any()):
        raise ValueError(
            f"a target lies in ignore_columns {ignore.tolist()}; padding/ignored columns cannot be "
            "held-out items (drop those targets or fix the item indexing)."
        )
    pairs = _exclusion_pairs(exclude, targets, n, ignore)
    if b == 0 or t == 0:
        return torch.zeros((b, t), dtype=torch.long, device=scores.device)
    target_scores = scores.gather(1, targets.clamp(min=0))  # (B, T); padding reads column 0, masked below
    ignored_scores = scores.index_select(1, ignore) if ignore.numel() else None  # (B, |ignore|)
    if pairs is not None:
        ex_rows, ex_cols = pairs
        ex_scores = scores[ex_rows, ex_cols]  # (E,)
    ranks = _count_at_least(scores, target_scores)  # (B, T), every column counted, target included
    for j in range(t):  # remove ignored and excluded items scored >= the target (small tensors)
        st = target_scores[:, j : j + 1]  # (B, 1)
        if ignored_scores is not None:
            ranks[:, j] -= (ignored_scores >= st).sum(dim=1)
        if pairs is not None:
            ranks[:, j] -= torch.zeros_like(ranks[:, j]).index_add_(
                0, ex_rows, (ex_scores >= st[ex_rows, 0]).long()
            )
    return ranks.masked_fill_(~has_t, 0)


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (5, 10, 20)) -> dict[str, Tensor]:
    """Per-row HR@K, Recall@K, NDCG@K and MRR from target ranks.

    Args:
        ranks: ``(B, T)`` long tensor of 1-based ranks, ``0`` marking padding (as from :func:`target_ranks`).
        ks: cut-offs.

    Returns:
        ``{name: (B,) float32 tensor}`` with the names of :func:`metric_names`; rows without any target
        are NaN.

    Example:
        >>> out = metrics_from_ranks(torch.tensor([[1, 3], [2, 0]]), ks=(2,))
        >>> [round(v, 4) for v in out["ndcg@2"].tolist()], out["recall@2"].tolist()
        ([0.6131, 0.6309], [0.5, 1.0])
    """
    ks = check_ks(ks)
    if ranks.dim() == 1:
        ranks = ranks.unsqueeze(1)
    valid = ranks > 0
    n_targets = valid.sum(dim=1)  # (B,)
    no_target = n_targets == 0
    t = ranks.shape[1]
    rank_f = ranks.to(torch.float32)
    gains = torch.where(valid, 1.0 / torch.log2(rank_f + 1.0), torch.zeros_like(rank_f))  # (B, T)
    ideal = torch.cumsum(
        1.0 / torch.log2(torch.arange(2, t + 2, device=ranks.device, dtype=torch.float32)), 0
    )
    nt_f = n_targets.to(torch.float32)
    nan = torch.full_like(nt_f, float("nan"))
    out: dict[str, Tensor] = {}
    hits = {k: valid & (ranks <= k) for k in ks}
    for k in ks:
        out[f"hr@{k}"] = torch.where(no_target, nan, hits[k].any(dim=1).to(torch.float32))
    for k in ks:
        out[f"recall@{k}"] = torch.where(
            no_target, nan, hits[k].sum(dim=1).to(torch.float32) / nt_f.clamp(min=1)
        )
    for k in ks:
        dcg = (gains * hits[k]).sum(dim=1)
        if t:
            idcg = ideal[(n_targets.clamp(max=k) - 1).clamp(min=0)]
        else:
            idcg = torch.ones_like(nt_f)
        out[f"ndcg@{k}"] = torch.where(no_target, nan, dcg / idcg)
    best = ranks.masked_fill(~valid, torch.iinfo(torch.long).max).min(dim=1).values if t else n_targets
    out["mrr"] = torch.where(no_target, nan, 1.0 / best.clamp(min=1).to(torch.float32))
    return out


def ranking_metrics(
    scores: Tensor,
    targets: Tensor,
    ks: Sequence[int] = (5, 10, 20),
    exclude: ExcludeSpec = None,
    ignore_columns: Sequence[int] = (),
) -> dict[str, Tensor]:
    """Per-row full-ranking metrics (HR@K, Recall@K, NDCG@K, MRR) for one batch of users.

    Args:
        scores: ``(B, N)`` floating scores over the catalogue.
        targets: ``(B, T)`` (or ``(B,)``) integer item columns, ``-1`` padding.
        ks: cut-offs.
        exclude: history to mask (see :func:`target_ranks`); targets are never masked.
        ignore_columns: columns never ranked, e.g. ``(0,)`` for the padding item.

    Returns:
        ``{"hr@K", "recall@K", "ndcg@K" for K in ks, "mrr"}`` -> ``(B,)`` float32 per-row values; NaN for
        rows whose targets are all padding. Average them with ``nanmean`` or use
        :class:`FullRankingEvaluator`.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
        >>> ranking_metrics(scores, torch.tensor([[2], [0]]), ks=(1,))["mrr"]
        tensor([0.5000, 0.5000])
    """
    return metrics_from_ranks(target_ranks(scores, targets, exclude, ignore_columns), ks)


def sampled_ranking_metrics(
    scores: Tensor,
    positive_index: int | Tensor = 0,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Tensor]:
    """Metrics for the sampled-candidate protocol (1 positive + C-1 negatives per user).

    Pessimistic ties as in :func:`target_ranks`: a negative scored equal to the positive ranks above it.

    Args:
        scores: ``(B, C)`` scores of each user's candidates.
        positive_index: column of the positive candidate: an ``int`` for all rows, or a ``(B,)`` tensor.
        ks: cut-offs.

    Returns:
        ``{name: (B,) float32 tensor}`` as in :func:`ranking_metrics` (HR@K = Recall@K here).

    Example:
        >>> scores = torch.tensor([[0.7, 0.9, 0.1], [0.5, 0.5, 0.5]])  # positive first
        >>> sampled_ranking_metrics(scores, 0, ks=(1, 2))["hr@2"]  # 2nd row: constant scorer, rank 3
        tensor([1., 0.])
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a (B, C) tensor of candidate scores.")
    b, c = scores.shape
    if isinstance(positive_index, Tensor):
        pos = positive_index.to(device=scores.device, dtype=torch.long).reshape(-1)
        if pos.shape[0] != b:
            raise ValueError(
                f"positive_index must be an int or a ({b},) tensor; got shape {tuple(pos.shape)}."
            )
    else:
        if not 0 <= int(positive_index) < c:
            raise ValueError(f"positive_index must be a candidate column in [0, {c}); got {positive_index}.")
        pos = torch.full((b,), int(positive_index), dtype=torch.long, device=scores.device)
    return ranking_metrics(scores, pos.unsqueeze(1), ks)
