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

The functions live in :mod:`mmrec.rank_metrics` (ranks, accuracy) and :mod:`mmrec.list_metrics` (top-K
lists, coverage, item groups); this module holds the evaluator and re-exports them.

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

from mmrec.list_metrics import GROUPS, coverage, item_groups, same_list_share, top_k_lists
from mmrec.rank_metrics import (
    ExcludeSpec,
    check_ks,
    check_scores_targets,
    metric_names,
    metrics_from_ranks,
    ranking_metrics,
    sampled_ranking_metrics,
    target_ranks,
)

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
    # "cat" list states: lists while updating, one concatenated Tensor after a DDP sync
    raw_lists: list[Tensor]
    eval_lists: list[Tensor]
    users: list[Tensor]
    row_values: list[Tensor]

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
        self.ks = check_ks(ks)
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
        scores, targets = check_scores_targets(scores, targets)
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
