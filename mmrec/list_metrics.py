"""Beyond accuracy, on top-K lists: coverage, the share of users given the same list, head/tail/cold item groups (definitions in :mod:`mmrec.metrics`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mmrec.rank_metrics import ExcludeSpec

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
