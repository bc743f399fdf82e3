"""Next-item training losses shared by the sequential models: full softmax, sampled BCE, sampled softmax
with logQ correction, in-batch negatives.

- ``"ce"``: cross-entropy over the whole catalogue at every position that has a target (RecBole's
  ``loss_type: CE``; what mmrec's SASRec, GRU4Rec and BERT4Rec use by default).
- ``"bce"``: binary cross-entropy with one uniformly sampled negative per positive, as in the original
  SASRec (Kang & McAuley, 2018): ``-log sigmoid(s+) - log sigmoid(-s-)``, averaged over positions. A
  negative is never one of the user's own (training) items: :class:`NextItemLoss` rejects and redraws
  them, using the user's whole training sequence when it has been attached
  (:meth:`NextItemLoss.attach_user_items`), else the items of the batch row.
- ``"sampled"``: sampled softmax for large catalogues: each position's positive against ``num_negatives``
  items drawn once per batch (shared by all positions: one ``(P, K)`` matrix product instead of ``(P, N)``),
  uniformly or by training popularity (``negative_sampling``), with the **logQ correction** (Bengio &
  Senecal, 2008; Yi et al., 2019): every logit ``s_j`` becomes ``s_j - log q_j`` where ``q_j`` is the
  probability of drawing item ``j``, so that the sampled loss estimates the full softmax without bias
  towards popular items. A negative equal to a row's positive is removed (accidental hit). With
  ``num_negatives >= N`` the negatives are the whole catalogue (``q = 1``): exactly the full CE.
- ``"inbatch"``: in-batch negatives (two-tower style): each position's positive against the distinct targets
  of the batch, logQ-corrected by each item's share of the batch's targets (popular items are the
  negatives most often); memory ``P x unique(targets)``, independent of the catalogue size.

Item vectors are ``(N+1, d)`` with row 0 = padding (never a target, never a negative); hidden states are
``(..., d)`` queries whose inner product with an item vector is its score.

Example:
    >>> loss = NextItemLoss("bce", num_items=5)
    >>> hidden, items = torch.randn(1, 3, 4), torch.randn(6, 4)
    >>> targets = torch.tensor([[0, 2, 3]])
    >>> bool(loss(hidden, items, targets, seen=torch.tensor([[0, 1, 2]])) > 0)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LossName = Literal["ce", "bce", "sampled", "inbatch"]
NegativeSampling = Literal["uniform", "popularity"]


def full_softmax_ce(hidden: torch.Tensor, item_vecs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target against the whole catalogue (padding column excluded).

    Args:
        hidden: ``(P, d)`` query at each position with a target.
        item_vecs: ``(N+1, d)`` item vectors, row 0 = padding.
        targets: ``(P,)`` item indices in ``1..N``.

    Returns:
        Scalar mean over the ``P`` positions.

    Example:
        >>> items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(float(full_softmax_ce(torch.tensor([[0.0, 0.0]]), items, torch.tensor([1]))), 4)  # log 2
        0.6931
    """
    logits = hidden @ item_vecs.T  # (P, N+1): memory bounded by real positions, not B*L
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets)


def sampled_bce(
    hidden: torch.Tensor, item_vecs: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of one positive and one negative per position (Kang & McAuley's SASRec loss).

    Args:
        hidden: ``(P, d)`` queries.
        item_vecs: ``(N+1, d)`` item vectors.
        positives: ``(P,)`` target items.
        negatives: ``(P,)`` sampled negative items.

    Returns:
        ``mean_p[-log sigmoid(h_p . e_pos) - log sigmoid(-h_p . e_neg)]``.

    Example:
        >>> items = torch.tensor([[0.0], [1.0], [-1.0]])
        >>> round(float(sampled_bce(torch.tensor([[0.0]]), items, torch.tensor([1]), torch.tensor([2]))), 4)
        1.3863
    """
    pos = (hidden * item_vecs[positives]).sum(-1)
    neg = (hidden * item_vecs[negatives]).sum(-1)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()


def sampled_softmax_ce(
    hidden: torch.Tensor,
    item_vecs: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against shared negatives, logQ-corrected.

    Args:
        hidden: ``(P, d)`` queries.
        item_vecs: ``(N+1, d)`` item vectors.
        positives: ``(P,)`` target items.
        negatives: ``(K,)`` negative items shared by all positions (a negative equal to a row's positive is
            masked out of that row).
        log_q_pos: ``(P,)`` log sampling probability of each positive (``None``: no correction).
        log_q_neg: ``(K,)`` log sampling probability of each negative (``None``: no correction).

    Returns:
        ``mean_p[-log softmax([s_pos - log q_pos, s_neg_1 - log q_1, ...])[0]]``.

    Example:
        >>> items = torch.tensor([[0.0], [1.0], [2.0]])
        >>> h, pos, negs = torch.tensor([[1.0]]), torch.tensor([1]), torch.tensor([1, 2])
        >>> round(float(sampled_softmax_ce(h, items, pos, negs)), 4)  # negative 1 is the positive: masked
        1.3133
    """
    pos = (hidden * item_vecs[positives]).sum(-1, keepdim=True)  # (P, 1)
    neg = hidden @ item_vecs[negatives].T  # (P, K)
    if log_q_pos is not None and log_q_neg is not None:
        pos = pos - log_q_pos[:, None]
        neg = neg - log_q_neg[None, :]
    neg = neg.masked_fill(negatives[None, :] == positives[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def in_batch_softmax_ce(
    hidden: torch.Tensor, item_vecs: torch.Tensor, positives: torch.Tensor, logq_correction: bool = True
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against the distinct positives of the batch.

    Args:
        hidden: ``(P, d)`` queries.
        item_vecs: ``(N+1, d)`` item vectors.
        positives: ``(P,)`` target items.
        logq_correction: subtract ``log(count_j / P)`` (item ``j``'s share of the batch's targets) from the
            logit of each candidate ``j``.

    Returns:
        Scalar mean over the ``P`` positions.

    Example:
        >>> items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> h = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
        >>> float(in_batch_softmax_ce(h, items, torch.tensor([1, 2]))) < 0.01
        True
    """
    candidates, label, counts = torch.unique(positives, return_inverse=True, return_counts=True)
    logits = hidden @ item_vecs[candidates].T  # (P, U)
    if logq_correction:
        logits = logits - torch.log(counts.to(logits.dtype) / positives.numel())[None, :]
    return F.cross_entropy(logits, label)


def pair_keys(owners: torch.Tensor, items: torch.Tensor, num_items: int) -> torch.Tensor:
    """One int64 key per (owner, item) pair: ``owner * (num_items + 1) + item``."""
    return owners.to(torch.long) * (num_items + 1) + items.to(torch.long)


def _is_member(queries: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    idx = torch.searchsorted(sorted_keys, queries).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[idx] == queries


def sample_negatives(
    owners: torch.Tensor,
    forbidden: torch.Tensor,
    num_items: int,
    *,
    generator: torch.Generator | None = None,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Uniform negatives in ``1..num_items``, redrawn until none is a forbidden (owner, item) pair.

    Args:
        owners: ``(P,)`` who each negative is for (user index or batch row).
        forbidden: sorted ``(K,)`` :func:`pair_keys` of the pairs a negative may never be.
        num_items: catalogue size ``N``.
        generator: optional torch generator (default: the global RNG, seeded by ``seed_everything``).
        max_rounds: redraw rounds before giving up.

    Returns:
        ``(P,)`` negatives.

    Raises:
        RuntimeError: an owner has (almost) every item of the catalogue, so no negative can be drawn.

    Example:
        >>> forbidden = pair_keys(torch.tensor([0, 0]), torch.tensor([1, 2]), 3).sort().values
        >>> sample_negatives(torch.zeros(4, dtype=torch.long), forbidden, 3).tolist()
        [3, 3, 3, 3]
    """
    device = owners.device
    forbidden = forbidden.to(device)
    neg = torch.randint(1, num_items + 1, owners.shape, generator=generator, device=device)
    for _ in range(max_rounds):
        bad = _is_member(pair_keys(owners, neg, num_items), forbidden)
        n_bad = int(bad.sum())
        if n_bad == 0:
            return neg
        neg[bad] = torch.randint(1, num_items + 1, (n_bad,), generator=generator, device=device)
    raise RuntimeError(
        f"could not draw negatives outside the users' own items in {max_rounds} rounds: some user has "
        f"interacted with (almost) all {num_items} items. Use loss: ce for such data."
    )


class NextItemLoss(nn.Module):
    """The next-item loss of a sequential model, chosen by name (``"ce"``, ``"bce"``, ``"sampled"``,
    ``"inbatch"``; see the module docstring).

    For ``"bce"``, negatives exclude every training item of the user once :meth:`attach_user_items` has
    been called (models do it in ``attach_data`` through :meth:`attach`) and ``users`` is passed; otherwise
    they exclude the items of the batch row (``seen`` and the targets). For ``"sampled"`` with
    ``negative_sampling="popularity"``, :meth:`attach` takes the training popularity from
    ``inputs["train_interactions"]`` (or :meth:`attach_popularity`); until then negatives are uniform.

    Args:
        kind: ``"ce"`` (full softmax), ``"bce"`` (one sampled negative per positive), ``"sampled"`` (sampled
            softmax) or ``"inbatch"`` (in-batch negatives).
        num_items: catalogue size ``N``.
        num_negatives: negatives per batch of ``"sampled"`` (``>= N``: the whole catalogue, = full CE).
        negative_sampling: ``"uniform"`` or ``"popularity"`` (training counts; items never seen in training
            keep a count of 1 so that every item can be drawn).
        logq_correction: subtract the log sampling probability from the logits (``"sampled"``, ``"inbatch"``).

    Example:
        >>> loss = NextItemLoss("ce", num_items=3)
        >>> float(loss(torch.zeros(1, 2, 4), torch.randn(4, 4), torch.tensor([[1, 2]]))) > 0
        True
        >>> NextItemLoss("sampled", num_items=1000, num_negatives=64).kind
        'sampled'
    """

    # buffers registered in __init__ and replaced by the set_* methods
    user_item_keys: torch.Tensor
    sampling_probs: torch.Tensor
    absent_items: torch.Tensor

    def __init__(
        self,
        kind: LossName,
        num_items: int,
        num_negatives: int = 256,
        negative_sampling: NegativeSampling = "uniform",
        logq_correction: bool = True,
    ) -> None:
        super().__init__()
        if kind not in get_args(LossName):
            raise ValueError(f"loss must be one of {list(get_args(LossName))}, got {kind!r}.")
        if negative_sampling not in get_args(NegativeSampling):
            raise ValueError(
                f"negative_sampling must be one of {list(get_args(NegativeSampling))}, got {negative_sampling!r}."
            )
        if int(num_negatives) < 1:
            raise ValueError(f"num_negatives must be >= 1 (e.g. 256), got {num_negatives}.")
        self.kind = kind
        self.num_items = int(num_items)
        self.num_negatives = int(num_negatives)
        self.negative_sampling = negative_sampling
        self.logq_correction = bool(logq_correction)
        # sorted (user, item) keys of the training items; not saved in checkpoints (rebuilt from the data)
        self.register_buffer("user_item_keys", torch.empty(0, dtype=torch.long), persistent=False)
        # (N+1,) sampling probabilities of "sampled" negatives (row 0 = 0); empty = uniform
        self.register_buffer("sampling_probs", torch.empty(0), persistent=False)
        self.users_attached = False
        # items that do not exist at training time (the cold-item split's withheld items): never a negative
        self.register_buffer("absent_items", torch.empty(0, dtype=torch.long), persistent=False)

    def exclude_items(self, items: Sequence[int]) -> None:
        """Items absent from training (e.g. withheld by the cold-item split): the ``ce`` softmax leaves them
        out and ``bce`` / ``sampled`` never draw them as negatives, so the model does not learn to push them
        down."""
        self.absent_items = torch.as_tensor(sorted({int(i) for i in items}), dtype=torch.long).to(
            self.absent_items.device
        )

    @property
    def needs_user_items(self) -> bool:
        """True when the loss samples per-user negatives (and so wants the users' training items)."""
        return self.kind == "bce"

    @property
    def needs_popularity(self) -> bool:
        """True when negatives are drawn by training popularity."""
        return self.kind == "sampled" and self.negative_sampling == "popularity"

    def attach(self, inputs: Mapping[str, Any]) -> None:
        """Take what the loss needs from a model's inputs (``datamodule.model_inputs()``, lazy): the users'
        training items (``"bce"``) and the training popularity (``"sampled"`` by popularity)."""
        if self.needs_user_items and "train_sequences" in inputs:
            self.attach_user_items(inputs["train_sequences"])
        if self.needs_popularity and "train_interactions" in inputs:
            self.attach_popularity(np.asarray(inputs["train_interactions"].sum(axis=0)).ravel())

    def attach_user_items(self, user_items: Sequence[Sequence[int]]) -> None:
        """Remember each user's training items (``user_items[u]`` = item indices of user ``u``)."""
        owners = torch.repeat_interleave(
            torch.arange(len(user_items)), torch.tensor([len(s) for s in user_items], dtype=torch.long)
        )
        items = torch.tensor([i for s in user_items for i in s], dtype=torch.long)
        keys = pair_keys(owners, items, self.num_items).unique()  # sorted
        self.user_item_keys = keys.to(self.user_item_keys.device)
        self.users_attached = True

    def attach_popularity(self, counts: Any) -> None:
        """Draw ``"sampled"`` negatives in proportion to ``counts`` (``(N+1,)`` training interactions per
        item column; column 0 is padding). Unseen items count 1, so that each item has ``q > 0``."""
        c = torch.as_tensor(np.asarray(counts, dtype=np.float64)).flatten()
        if c.numel() != self.num_items + 1:
            raise ValueError(
                f"popularity has {c.numel()} columns, the catalogue {self.num_items + 1} (with padding)."
            )
        c = c.clamp(min=1.0)
        c[0] = 0.0
        self.sampling_probs = (c / c.sum()).to(torch.float32).to(self.user_item_keys.device)

    def draw_negatives(
        self,
        targets: torch.Tensor,
        *,
        users: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One negative per target position (``targets > 0``), never one of the row's user's items.

        Args:
            targets: ``(B, L)`` target items, 0 = no target.
            users: ``(B,)`` user indices (used with the attached training items).
            seen: ``(B, S)`` other items of each row (history), 0 ignored; used when no user items are
                attached.

        Returns:
            ``(P,)`` negatives for the ``P`` target positions, in ``targets[targets > 0]`` order.
        """
        keep = targets > 0
        rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
        if self.users_attached and users is not None:
            return sample_negatives(users[rows], self.user_item_keys, self.num_items)
        row_items = targets if seen is None else torch.cat([seen, targets], dim=1)
        row_ids = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(row_items)
        real = row_items > 0
        forbidden = pair_keys(row_ids[real], row_items[real], self.num_items).unique()
        return sample_negatives(rows, forbidden, self.num_items)

    def shared_negatives(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(negatives (K,), log q (N+1,) or None)`` for ``"sampled"``: ``num_negatives`` draws with
        replacement (uniform or by popularity); the whole catalogue with ``log q = 0`` when
        ``num_negatives >= N``; ``None`` when no correction applies (uniform ``q`` is a constant shift)."""
        absent = self.absent_items.to(device)
        if self.num_negatives >= self.num_items:
            every = torch.arange(1, self.num_items + 1, device=device)
            return (every[~torch.isin(every, absent)] if absent.numel() else every), None
        probs = self.sampling_probs
        if probs.numel() or absent.numel():
            if not probs.numel():  # uniform over the items that exist at training time
                probs = torch.ones(self.num_items + 1, device=device)
                probs[0] = 0.0
            probs = probs.to(device).clone()
            probs[absent] = 0.0  # a withheld (cold) item is never a negative, as in ``ce`` / ``bce``
            probs = probs / probs.sum()
            negatives = torch.multinomial(probs, self.num_negatives, replacement=True)
            if not self.sampling_probs.numel():
                return negatives, None  # uniform: log q is a constant shift
            return negatives, torch.log(probs.clamp(min=1e-30)) if self.logq_correction else None
        return torch.randint(1, self.num_items + 1, (self.num_negatives,), device=device), None

    def forward(
        self,
        hidden: torch.Tensor,
        item_vecs: torch.Tensor,
        targets: torch.Tensor,
        *,
        users: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss over the positions that have a target.

        Args:
            hidden: ``(B, L, d)`` queries at every position.
            item_vecs: ``(N+1, d)`` item vectors.
            targets: ``(B, L)`` target item at each position, 0 = none.
            users: ``(B,)`` user indices (``"bce"``: negatives avoid their training items).
            seen: ``(B, S)`` history items of each row (``"bce"`` without attached user items).

        Returns:
            Scalar loss.
        """
        keep = targets > 0
        if not bool(keep.any()):
            raise ValueError("the batch has no target position (all target_ids are 0); nothing to learn.")
        positives = targets[keep]
        if self.kind == "ce":
            if self.absent_items.numel():
                logits = hidden[keep] @ item_vecs.T
                logits[:, 0] = float("-inf")
                logits[:, self.absent_items.to(logits.device)] = float("-inf")
                return F.cross_entropy(logits, positives)
            return full_softmax_ce(hidden[keep], item_vecs, positives)
        if self.kind == "sampled":
            negatives, log_q = self.shared_negatives(hidden.device)
            if log_q is None:
                return sampled_softmax_ce(hidden[keep], item_vecs, positives, negatives)
            return sampled_softmax_ce(
                hidden[keep], item_vecs, positives, negatives, log_q[positives], log_q[negatives]
            )
        if self.kind == "inbatch":
            return in_batch_softmax_ce(hidden[keep], item_vecs, positives, self.logq_correction)
        negatives = self.draw_negatives(targets, users=users, seen=seen)
        if self.absent_items.numel():  # redraw negatives that are absent items (a few rounds suffice)
            absent = self.absent_items.to(negatives.device)
            for _ in range(20):
                bad = torch.isin(negatives, absent)
                if not bool(bad.any()):
                    break
                negatives[bad] = torch.randint(1, self.num_items + 1, (int(bad.sum()),), device=negatives.device)
        return sampled_bce(hidden[keep], item_vecs, positives, negatives)
