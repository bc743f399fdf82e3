"""Ranking metrics for recommendation: full ranking over the catalogue and sampled candidates.

Protocol (DESIGN §6, :mod:`mmrec.eval_protocol`): every user is scored against the whole catalogue, the items
of their history are masked when the protocol says so, and the rank of each held-out item decides HR@K,
Recall@K, NDCG@K and MRR.

Conventions shared by every function here:

* ``scores`` is a ``(B, N)`` floating tensor, one row per user, column ``j`` = item index ``j``. Models
  index items ``1..N-1`` and keep column ``0`` for padding: pass ``ignore_columns=(0,)`` so that it is
  never ranked.
* ``targets`` is a ``(B, T)`` integer tensor of held-out item columns, ``-1`` padding (leave-one-out is
  ``(B, 1)``; a ``(B,)`` tensor is read as ``(B, 1)``). The items of one row must be distinct.
* ``exclude`` (history masking) is sparse: a pair ``(rows, cols)`` of 1-D integer tensors of equal length
  naming the entries ``scores[rows[i], cols[i]]`` to remove from the ranking; a dense ``(B, N)`` bool mask
  is accepted too. Duplicated pairs are fine. **Targets are never excluded**, even when they appear in
  the history (repeat consumption).
* Rank: the 1-based rank of a target among the items that are neither excluded nor ignored, with
  *pessimistic* ties: every other item whose score is ``>=`` the target's ranks above it, so a constant
  scorer gets the worst rank, never the best. The other targets of the row are ordinary items of the
  ranked list. Formally ``rank(t) = #{j valid : scores[b, j] >= scores[b, t]}``.
* Metrics, per row (rows without any target give NaN):

  - ``hr@K``: 1 if at least one target has rank <= K.
  - ``recall@K``: (#targets with rank <= K) / (#targets).
  - ``ndcg@K``: sum over targets with rank <= K of ``1/log2(rank+1)``, divided by the ideal DCG of
    ``min(#targets, K)`` targets placed first. For one target: ``1/log2(rank+1)`` if rank <= K.
  - ``mrr``: ``1/rank`` of the best-ranked target (not truncated at any K).

Beyond accuracy (:class:`FullRankingEvaluator`, what the quality harness needs to tell a broken model from
a working one):

* ``coverage@K``: distinct items in the union of all evaluated users' top-K lists, divided by the number of
  rankable items (catalogue columns minus ``ignore_columns``). Lists are taken from the ranking the metrics
  use (history masked when the batch gives ``exclude``).
* ``same_topK_share``: the share of evaluated users whose top-K list (ordered) equals the most common top-K
  list, on the **unmasked** scores (ignored columns left out): a model whose scores do not depend on the
  user gets 1.0 whether or not the protocol masks history (masking alone would make the lists differ).
  MostPop gets 1.0 by construction; a healthy personalised model is near 0.
* ``head/…``, ``tail/…``, ``cold/…``: every accuracy metric restricted to the targets that are head, tail or
  cold items (:func:`item_groups`; rows without such a target are left out; ``<group>/num_users`` counts
  the rows kept). A target's rank is its rank in the full ranking, as overall.

The hot path is vectorised: one pass over the ``(B, N)`` scores per target column (a loop over ``T``,
never over users or items), on the device of ``scores``; ``scores`` is never copied or modified.

Example:
    >>> import torch
    >>> from mmrec.metrics import ranking_metrics
    >>> scores = torch.tensor([[0.0, 0.9, 0.8, 0.1, 0.5]])  # one user, padding column 0 + 4 items
    >>> out = ranking_metrics(scores, torch.tensor([[2]]), ks=(1, 2), ignore_columns=(0,))
    >>> out["hr@1"].item(), out["hr@2"].item(), out["mrr"].item()
    (0.0, 1.0, 0.5)
    >>> history = (torch.tensor([0]), torch.tensor([1]))  # mask item 1 for row 0
    >>> ranking_metrics(scores, torch.tensor([[2]]), ks=(1,), exclude=history, ignore_columns=(0,))["hr@1"]
    tensor([1.])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "GROUPS",
    "ExcludeSpec",
    "FullRankingEvaluator",
    "coverage",
    "item_groups",
    "metric_names",
    "metrics_from_ranks",
    "ranking_metrics",
    "same_list_share",
    "sampled_ranking_metrics",
    "target_ranks",
    "top_k_lists",
]

#: History to mask: ``(rows, cols)`` 1-D integer tensors, or a dense ``(B, N)`` bool mask, or ``None``.
ExcludeSpec = tuple[Tensor, Tensor] | Tensor | None

_METRIC_KINDS = ("hr", "recall", "ndcg")


# --------------------------------------------------------------------------------------------- checks
def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
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
    ks = _check_ks(ks)
    return [f"{kind}@{k}" for kind in _METRIC_KINDS for k in ks] + ["mrr"]


def _check_scores_targets(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
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
    scores, targets = _check_scores_targets(scores, targets)
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
    ks = _check_ks(ks)
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


# --------------------------------------------------------------------------------------------- lists, groups
#: item groups of the per-group metrics, in state order
GROUPS: tuple[str, ...] = ("head", "tail", "cold")


def top_k_lists(
    scores: Tensor, k: int, exclude: ExcludeSpec = None, ignore_columns: Sequence[int] = ()
) -> Tensor:
    """Each row's top-``k`` item columns, best first, leaving out ignored and excluded columns.

    ``scores`` is not modified (a copy is masked when ``exclude`` is given). Ties are ordered as
    ``torch.topk`` orders them, identically for identical rows.

    Args:
        scores: ``(B, N)`` floating scores.
        k: list length (at most the number of columns left).
        exclude: ``(rows, cols)`` or a ``(B, N)`` bool mask of entries to leave out (history masking).
        ignore_columns: columns never listed (padding).

    Returns:
        ``(B, k)`` long tensor of column indices.

    Example:
        >>> top_k_lists(torch.tensor([[0.0, 0.9, 0.1, 0.5]]), 2, ignore_columns=(0,))
        tensor([[1, 3]])
        >>> top_k_lists(torch.tensor([[0.0, 0.9, 0.1, 0.5]]), 2, exclude=(torch.tensor([0]), torch.tensor([1])))
        tensor([[3, 2]])
    """
    n = scores.shape[1]
    masked = scores
    ignore = sorted({int(c) for c in ignore_columns})
    if exclude is not None or ignore:
        masked = scores.clone()
        if ignore:
            masked[:, ignore] = float("-inf")
        if isinstance(exclude, Tensor):
            masked[exclude.to(scores.device)] = float("-inf")
        elif exclude is not None:
            rows, cols = exclude
            if rows.numel():
                masked[rows.to(scores.device).long(), cols.to(scores.device).long()] = float("-inf")
    return masked.topk(min(k, n), dim=1).indices


def coverage(lists: Tensor, num_items: int) -> float:
    """Catalogue coverage: distinct items in the union of the lists divided by ``num_items``.

    Example:
        >>> coverage(torch.tensor([[1, 2], [2, 3]]), 10)
        0.3
    """
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}.")
    return float(torch.unique(lists).numel()) / num_items if lists.numel() else math.nan


def same_list_share(lists: Tensor) -> float:
    """Share of rows equal (same items, same order) to the most common row of ``lists`` ``(U, k)``.

    Example:
        >>> same_list_share(torch.tensor([[1, 2], [1, 2], [2, 1], [3, 4]]))
        0.5
    """
    if lists.shape[0] == 0:
        return math.nan
    _, counts = torch.unique(lists, dim=0, return_counts=True)
    return float(counts.max()) / lists.shape[0]


def item_groups(
    popularity: Tensor,
    head_fraction: float = 0.2,
    cold_max_count: int = 5,
    ignore_columns: Sequence[int] = (),
) -> dict[str, Tensor]:
    """Head, tail and cold items from training popularity (interaction counts per item column).

    * **head**: the ``ceil(head_fraction * M)`` most popular of the ``M`` rankable items (columns not in
      ``ignore_columns``), ties at the boundary going to the lower column index;
    * **tail**: every other rankable item (the bottom ``1 - head_fraction`` share of the catalogue);
    * **cold**: rankable items with at most ``cold_max_count`` training interactions (usually a subset of
      the tail; items never seen in training are cold).

    Args:
        popularity: ``(N,)`` training interaction counts per column (``train_interactions.sum(0)``).
        head_fraction: share of the catalogue in the head, in ``(0, 1)``.
        cold_max_count: the most training interactions a cold item has (>= 0).
        ignore_columns: columns in no group (padding).

    Returns:
        ``{"head", "tail", "cold"}`` -> ``(N,)`` bool masks.

    Example:
        >>> g = item_groups(torch.tensor([0.0, 9, 1, 5, 0, 3]), head_fraction=0.4, cold_max_count=1,
        ...                 ignore_columns=(0,))
        >>> [g[k].nonzero().flatten().tolist() for k in ("head", "tail", "cold")]
        [[1, 3], [2, 4, 5], [2, 4]]
    """
    if not 0.0 < head_fraction < 1.0:
        raise ValueError(f"head_fraction must be in (0, 1), e.g. 0.2; got {head_fraction}.")
    if cold_max_count < 0:
        raise ValueError(f"cold_max_count must be >= 0, got {cold_max_count}.")
    pop = torch.as_tensor(popularity, dtype=torch.float64).flatten()
    n = pop.numel()
    rankable = torch.ones(n, dtype=torch.bool)
    for c in ignore_columns:
        if 0 <= int(c) < n:
            rankable[int(c)] = False
    cols = rankable.nonzero().flatten()
    # stable sort by descending count keeps ascending column order among ties
    order = cols[torch.argsort(-pop[cols], stable=True)]
    head = torch.zeros(n, dtype=torch.bool)
    head[order[: math.ceil(head_fraction * cols.numel())]] = True
    return {"head": head, "tail": rankable & ~head, "cold": rankable & (pop <= cold_max_count)}


# --------------------------------------------------------------------------------------------- evaluator
#: fixed-point scale of the evaluator's exact sums (row values in [0, 1] -> int64 multiples of 2**-32)
_FIXED_POINT = float(2**32)


def _fixed_point(values: Tensor) -> Tensor:
    """Row values in ``[0, 1]`` as int64 multiples of ``2**-32`` (sums of them are exact and associative)."""
    return torch.round(values.to(torch.float64) * _FIXED_POINT).to(torch.long)


def _means(sums: Tensor, count: int) -> list[float]:
    return (sums.to(torch.float64) / _FIXED_POINT / count).tolist()


class FullRankingEvaluator(Metric):
    """Accumulates full-ranking metrics over batches of users; a ``torchmetrics.Metric`` (DDP-ready).

    Keeps running sums and counts, plus, when asked, the top-``list_k`` lists (``coverage@K`` and
    ``same_topK_share``, see the module docstring) and the per-user values (for paired significance tests).
    All states reduce with ``sum`` or ``cat`` across processes, and :meth:`compute` and :meth:`per_user`
    gather them from every rank, so under Lightning DDP every rank gets the metrics of all users. Each user
    must be evaluated by exactly one process: use a sampler that does not pad with duplicates
    (``mmrec.datamodules.sampling.EvalShardSampler``).

    **The sums are exact** (fixed point, ``2**-32`` per row value, in int64): the result does not depend on
    how users are split into batches or ranks, nor on the order sums are reduced, so a 2-process evaluation
    gives bit-identical metrics to a 1-process one (float sums would differ in the last bits). Rounding each
    row value to ``2**-32`` (``2.3e-10``) is below float32's own resolution of the values near 1; up to
    ``2**31`` rows fit.

    The per-batch work runs on the device of ``scores``; keep the evaluator on the same device
    (``evaluator.to(device)``, automatic inside a LightningModule) to avoid one host copy per batch.

    Also serves the sampled-candidate protocol: pass ``(B, C)`` candidate scores and ``targets`` holding
    the positive's column (leave ``list_k`` and item groups unset there: columns are not items).

    Args:
        ks: cut-offs for HR/Recall/NDCG.
        ignore_columns: columns never ranked, e.g. ``(0,)`` for the padding item.
        empty_target_action: what to do with a row whose targets are all ``-1``: ``"error"`` (default;
            never drop users silently) or ``"skip"`` (left out of the means, counted in
            ``num_skipped_users``).
        list_k: length of the top lists behind ``coverage@K`` / ``same_topK_share`` (``None``: not computed).
        keep_per_user: keep every row's metric values and user index (:meth:`per_user`).
        **kwargs: forwarded to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``, ``process_group``).

    Example:
        >>> ev = FullRankingEvaluator(ks=(1, 2), ignore_columns=(0,))
        >>> ev.update(torch.tensor([[0.0, 0.2, 0.9, 0.4]]), torch.tensor([[2]]))
        >>> ev.update(torch.tensor([[0.0, 0.9, 0.1, 0.4]]), torch.tensor([[3]]),
        ...           exclude=(torch.tensor([0]), torch.tensor([1])))
        >>> res = ev.compute()
        >>> res["hr@1"], res["mrr"], res["num_users"]
        (1.0, 1.0, 2)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sums: Tensor
    num_users: Tensor
    num_skipped_users: Tensor
    group_sums: Tensor
    group_users: Tensor

    def __init__(
        self,
        ks: Sequence[int] = (1, 5, 10, 20),
        ignore_columns: Sequence[int] = (),
        empty_target_action: Literal["error", "skip"] = "error",
        list_k: int | None = None,
        keep_per_user: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if empty_target_action not in ("error", "skip"):
            raise ValueError(f"empty_target_action must be 'error' or 'skip'; got {empty_target_action!r}.")
        if list_k is not None and (isinstance(list_k, bool) or int(list_k) < 1):
            raise ValueError(f"list_k must be a positive list length (e.g. 10) or None; got {list_k!r}.")
        self.ks = _check_ks(ks)
        self.ignore_columns = tuple(sorted({int(c) for c in ignore_columns}))
        self.empty_target_action = empty_target_action
        self.list_k = None if list_k is None else int(list_k)
        self.keep_per_user = keep_per_user
        self.metric_names = metric_names(self.ks)
        self._groups: dict[str, Tensor] | None = None
        self._width: int | None = None  # catalogue columns seen by update (for coverage)
        m = len(self.metric_names)
        self.add_state("sums", default=torch.zeros(m, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_users", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_skipped_users", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "group_sums", default=torch.zeros(len(GROUPS), m, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state(
            "group_users", default=torch.zeros(len(GROUPS), dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("raw_lists", default=[], dist_reduce_fx="cat")
        self.add_state("eval_lists", default=[], dist_reduce_fx="cat")
        self.add_state("users", default=[], dist_reduce_fx="cat")
        self.add_state("row_values", default=[], dist_reduce_fx="cat")

    # ----------------------------------------------------------------- configuration
    def set_item_groups(self, groups: dict[str, Tensor] | None) -> None:
        """Enable the ``head/``, ``tail/`` and ``cold/`` metrics with masks from :func:`item_groups`
        (``None`` disables them). Takes effect for the rows updated afterwards."""
        if groups is not None:
            missing = [g for g in GROUPS if g not in groups]
            if missing:
                raise ValueError(f"item groups need masks for {list(GROUPS)}; missing {missing}.")
            groups = {g: torch.as_tensor(groups[g], dtype=torch.bool).flatten() for g in GROUPS}
        self._groups = groups

    # ----------------------------------------------------------------- accumulation
    def update(
        self, scores: Tensor, targets: Tensor, exclude: ExcludeSpec = None, users: Tensor | None = None
    ) -> None:
        """Rank one batch of users and add its per-row metrics to the running sums.

        Args:
            scores: ``(B, N)`` floating scores over the catalogue (or ``(B, C)`` candidates).
            targets: ``(B, T)`` (or ``(B,)``) integer item columns, ``-1`` padding.
            exclude: history to mask, ``(rows, cols)`` with ``rows`` indexing this batch, or a bool mask.
            users: ``(B,)`` user indices, kept with the per-user values (default: running row numbers).
        """
        scores, targets = _check_scores_targets(scores, targets)
        self._width = int(scores.shape[1])
        ranks = target_ranks(scores, targets, exclude, self.ignore_columns)
        per_row = metrics_from_ranks(ranks, self.ks)
        values = torch.stack([per_row[name] for name in self.metric_names], dim=1)  # (B, M)
        empty = torch.isnan(values[:, 0])  # (B,): hr@k is NaN only for rows without targets
        if self.empty_target_action == "error" and bool(empty.any()):
            rows = empty.nonzero()[:5, 0].tolist()
            raise ValueError(
                f"{int(empty.sum())} row(s) have no target (all -1), e.g. rows {rows}. Filter out users "
                "without held-out items, or build the evaluator with empty_target_action='skip'."
            )
        keep = ~empty
        n_empty = empty.sum()
        self.sums += _fixed_point(values.nan_to_num(0.0)).sum(dim=0).to(self.sums.device)
        self.num_users += (empty.numel() - n_empty).to(self.num_users.device)
        self.num_skipped_users += n_empty.to(self.num_skipped_users.device)
        if self._groups is not None:
            self._update_groups(ranks, targets)
        if self.list_k is not None:
            raw = top_k_lists(scores, self.list_k, None, self.ignore_columns)[keep]
            masked = exclude is not None and not (isinstance(exclude, tuple) and exclude[0].numel() == 0)
            ev = top_k_lists(scores, self.list_k, exclude, self.ignore_columns)[keep] if masked else raw
            self.raw_lists.append(raw.to(torch.int32))
            self.eval_lists.append(ev.to(torch.int32))
        if self.keep_per_user:
            if users is None:
                start = int(self.num_users) + int(self.num_skipped_users) - empty.numel()
                users = torch.arange(start, start + empty.numel(), device=scores.device)
            self.users.append(torch.as_tensor(users, device=scores.device).long().flatten()[keep])
            self.row_values.append(values[keep].to(torch.float32))

    def _update_groups(self, ranks: Tensor, targets: Tensor) -> None:
        assert self._groups is not None
        n_cols = self._groups["head"].numel()
        for g, name in enumerate(GROUPS):
            mask = self._groups[name].to(ranks.device)
            has = targets >= 0
            if bool((targets[has] >= n_cols).any()):
                raise ValueError(
                    f"item groups cover {n_cols} columns but a target is column {int(targets.max())}; build "
                    "them from the popularity of the same catalogue (N+1 columns with padding)."
                )
            in_group = has & mask[targets.clamp(min=0)]
            rows = in_group.any(dim=1)
            if not bool(rows.any()):
                continue
            per = metrics_from_ranks(ranks[rows].masked_fill(~in_group[rows], 0), self.ks)
            vals = _fixed_point(torch.stack([per[k] for k in self.metric_names], dim=1))
            self.group_sums[g] += vals.sum(dim=0).to(self.group_sums.device)
            self.group_users[g] += rows.sum().to(self.group_users.device)

    # ----------------------------------------------------------------- results
    def _lists(self, which: str) -> Tensor | None:
        state = self.raw_lists if which == "raw" else self.eval_lists
        if isinstance(state, Tensor):  # after a DDP sync, "cat" states are one tensor
            return state
        return torch.cat(state) if state else None

    def _num_rankable(self, n_cols: int) -> int:
        return n_cols - sum(1 for c in self.ignore_columns if 0 <= c < n_cols)

    def compute(self) -> dict[str, float]:
        """Means over the evaluated users.

        Returns:
            ``{metric name: mean}`` plus ``"num_users"`` (users averaged over) and ``"num_skipped_users"``;
            with ``list_k``: ``coverage@K`` and ``same_topK_share``; with item groups:
            ``<group>/<metric>`` and ``<group>/num_users`` for head, tail and cold. Means are NaN when no user
            was evaluated.
        """
        n = int(self.num_users)
        if n == 0:
            warnings.warn(
                "FullRankingEvaluator.compute() with no evaluated users: metrics are NaN.", stacklevel=2
            )
        means = _means(self.sums, n) if n else [math.nan] * len(self.metric_names)
        out: dict[str, float] = dict(zip(self.metric_names, means))
        out["num_users"] = n
        out["num_skipped_users"] = int(self.num_skipped_users)
        if self.list_k is not None:
            k = self.list_k
            raw, ev = self._lists("raw"), self._lists("eval")
            width = self._width
            out[f"coverage@{k}"] = (
                coverage(ev, self._num_rankable(width)) if ev is not None and width else math.nan
            )
            out[f"same_top{k}_share"] = same_list_share(raw) if raw is not None else math.nan
        if self._groups is not None:
            for g, name in enumerate(GROUPS):
                c = int(self.group_users[g])
                vals = _means(self.group_sums[g], c) if c else [math.nan] * len(self.metric_names)
                out.update({f"{name}/{m}": v for m, v in zip(self.metric_names, vals)})
                out[f"{name}/num_users"] = c
        return out

    def per_user(self) -> dict[str, Tensor]:
        """Per-row values of every update since the last reset (needs ``keep_per_user=True``), of every rank
        under DDP (a collective call there: every rank must call it).

        Returns:
            ``{"user": (U,) long, <metric name>: (U,) float32}`` sorted by user (stable: rows of the same user
            in update order), whatever order the batches and ranks came in.
        """
        if not self.keep_per_user:
            raise RuntimeError("per-user values were not kept; build the evaluator with keep_per_user=True.")
        if not self._is_synced and self.sync_on_compute:
            with self.sync_context(dist_sync_fn=self.dist_sync_fn):
                return self._local_per_user()
        return self._local_per_user()

    def _local_per_user(self) -> dict[str, Tensor]:
        users = (
            self.users if isinstance(self.users, Tensor) else (torch.cat(self.users) if self.users else None)
        )
        vals = (
            self.row_values
            if isinstance(self.row_values, Tensor)
            else (torch.cat(self.row_values) if self.row_values else None)
        )
        if users is None or vals is None:
            return {
                "user": torch.zeros(0, dtype=torch.long),
                **{m: torch.zeros(0) for m in self.metric_names},
            }
        order = torch.argsort(users, stable=True)
        users, vals = users[order].cpu(), vals[order].cpu()
        return {"user": users, **{m: vals[:, i] for i, m in enumerate(self.metric_names)}}
