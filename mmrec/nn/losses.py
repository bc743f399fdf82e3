"""Next-item training losses shared by the sequential models: full-softmax CE and sampled BCE.

- ``"ce"``: cross-entropy over the whole catalogue at every position that has a target (RecBole's
  ``loss_type: CE``; what mmrec's SASRec, GRU4Rec and BERT4Rec use by default).
- ``"bce"``: binary cross-entropy with one uniformly sampled negative per positive, as in the original
  SASRec (Kang & McAuley, 2018): ``-log sigmoid(s+) - log sigmoid(-s-)``, averaged over positions. A
  negative is never one of the user's own (training) items: :class:`NextItemLoss` rejects and redraws
  them, using the user's whole training sequence when it has been attached
  (:meth:`NextItemLoss.attach_user_items`), else the items of the batch row.

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

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

LossName = Literal["ce", "bce"]


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
    """The next-item loss of a sequential model, chosen by name (``"ce"`` or ``"bce"``).

    For ``"bce"``, negatives exclude every training item of the user once :meth:`attach_user_items` has
    been called (models do it in ``attach_data`` from ``inputs["train_sequences"]``) and ``users`` is
    passed; otherwise they exclude the items of the batch row (``seen`` and the targets).

    Args:
        kind: ``"ce"`` (full softmax) or ``"bce"`` (one sampled negative per positive).
        num_items: catalogue size ``N``.

    Example:
        >>> loss = NextItemLoss("ce", num_items=3)
        >>> float(loss(torch.zeros(1, 2, 4), torch.randn(4, 4), torch.tensor([[1, 2]]))) > 0
        True
    """

    def __init__(self, kind: LossName, num_items: int) -> None:
        super().__init__()
        if kind not in get_args(LossName):
            raise ValueError(f"loss must be one of {list(get_args(LossName))}, got {kind!r}.")
        self.kind = kind
        self.num_items = int(num_items)
        # sorted (user, item) keys of the training items; not saved in checkpoints (rebuilt from the data)
        self.register_buffer("user_item_keys", torch.empty(0, dtype=torch.long), persistent=False)
        self.users_attached = False
        # items that do not exist at training time (the cold-item split's withheld items): never a negative
        self.register_buffer("absent_items", torch.empty(0, dtype=torch.long), persistent=False)

    def exclude_items(self, items: Sequence[int]) -> None:
        """Items absent from training (e.g. withheld by the cold-item split): the ``ce`` softmax leaves them
        out and ``bce`` never draws them as negatives, so the model does not learn to push them down."""
        self.absent_items = torch.as_tensor(sorted({int(i) for i in items}), dtype=torch.long).to(
            self.absent_items.device
        )

    @property
    def needs_user_items(self) -> bool:
        """True when the loss samples negatives (and so wants the users' training items)."""
        return self.kind == "bce"

    def attach_user_items(self, user_items: Sequence[Sequence[int]]) -> None:
        """Remember each user's training items (``user_items[u]`` = item indices of user ``u``)."""
        owners = torch.repeat_interleave(
            torch.arange(len(user_items)), torch.tensor([len(s) for s in user_items], dtype=torch.long)
        )
        items = torch.tensor([i for s in user_items for i in s], dtype=torch.long)
        keys = pair_keys(owners, items, self.num_items).unique()  # sorted
        self.user_item_keys = keys.to(self.user_item_keys.device)
        self.users_attached = True

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
        if self.kind == "ce":
            if self.absent_items.numel():
                logits = hidden[keep] @ item_vecs.T
                logits[:, 0] = float("-inf")
                logits[:, self.absent_items.to(logits.device)] = float("-inf")
                return F.cross_entropy(logits, targets[keep])
            return full_softmax_ce(hidden[keep], item_vecs, targets[keep])
        negatives = self.draw_negatives(targets, users=users, seen=seen)
        if self.absent_items.numel():  # redraw negatives that are absent items (a few rounds suffice)
            absent = self.absent_items.to(negatives.device)
            for _ in range(20):
                bad = torch.isin(negatives, absent)
                if not bool(bad.any()):
                    break
                negatives[bad] = torch.randint(1, self.num_items + 1, (int(bad.sum()),), device=negatives.device)
        return sampled_bce(hidden[keep], item_vecs, targets[keep], negatives)
