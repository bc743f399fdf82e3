"""A user x item interaction table on the model's device: user rows, membership tests, BPR triples.

Collaborative-filtering models (BPR, LightGCN, VBPR, FREEDOM) and item-kNN read the training interactions
(``inputs["train_interactions"]``, a ``(U, N+1)`` CSR matrix) through :class:`InteractionTable`. It keeps
the matrix as three non-persistent buffers (so it follows ``model.to(device)`` and stays out of
checkpoints) and draws ``(user, positive, negative)`` triples where the negative is never one of the user's
training positives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def binary_csr(matrix: Any) -> Any:
    """A binarised copy of a scipy sparse matrix (every stored count becomes 1, sorted column indices).

    Example:
        >>> import scipy.sparse as sp
        >>> binary_csr(sp.csr_matrix([[0, 2, 1], [0, 0, 3]])).toarray().tolist()
        [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    """
    csr = matrix.tocsr(copy=True).astype(np.float32)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.data[:] = 1.0
    csr.sort_indices()
    return csr


class InteractionTable(nn.Module):
    """Binary user-item interactions (CSR) as torch buffers.

    Args:
        matrix: ``(U, N+1)`` scipy sparse matrix of interaction counts (``inputs["train_interactions"]``);
            counts are binarised, column 0 (padding) must be empty.

    Example:
        >>> import scipy.sparse as sp
        >>> t = InteractionTable(sp.csr_matrix([[0, 1, 1, 0], [0, 0, 0, 1]]))
        >>> t.dense_rows(torch.tensor([1])).tolist()
        [[0.0, 0.0, 0.0, 1.0]]
        >>> u, p, n = t.sample(torch.tensor([0, 1]))
        >>> u.tolist(), p.tolist(), bool(t.contains(u, n).any())
        ([0, 0, 1], [1, 2, 3], False)
    """

    # buffers (registered in __init__; declared here so that type checkers see tensors, not Module attributes)
    indptr: torch.Tensor
    indices: torch.Tensor
    rows: torch.Tensor
    keys: torch.Tensor

    def __init__(self, matrix: Any) -> None:
        super().__init__()
        csr = binary_csr(matrix)
        num_users, num_cols = csr.shape
        if num_cols < 2:
            raise ValueError(f"the interaction matrix has {num_cols} columns; expected (U, N+1) with N >= 1.")
        if csr.indptr[-1] and csr.indices.min() < 1:
            raise ValueError("column 0 of the interaction matrix is padding and must be empty.")
        self.num_users = int(num_users)
        self.num_items = int(num_cols - 1)
        indptr = torch.from_numpy(csr.indptr.astype(np.int64))
        indices = torch.from_numpy(csr.indices.astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(self.num_users), indptr[1:] - indptr[:-1])
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("indices", indices, persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        # row-major with sorted columns, so the keys are sorted: membership = one searchsorted
        self.register_buffer("keys", rows * (self.num_items + 1) + indices, persistent=False)

    @property
    def nnz(self) -> int:
        """Number of (user, item) pairs."""
        return int(self.indices.numel())

    def degrees(self, users: torch.Tensor) -> torch.Tensor:
        """``(B,)`` number of items of each user (0 for users outside the table, e.g. ``-1``)."""
        ok = (users >= 0) & (users < self.num_users)
        u = users.clamp(0, self.num_users - 1)
        return torch.where(ok, self.indptr[u + 1] - self.indptr[u], torch.zeros_like(u))

    def item_degrees(self) -> torch.Tensor:
        """``(N+1,)`` number of users of each item (0 for padding)."""
        return torch.bincount(self.indices, minlength=self.num_items + 1)

    def dense_rows(self, users: torch.Tensor) -> torch.Tensor:
        """``(B, N+1)`` float 0/1 rows of ``users`` (all zeros for users outside the table)."""
        deg = self.degrees(users)
        out = torch.zeros(users.numel(), self.num_items + 1, device=self.indices.device)
        if int(deg.sum()) == 0:
            return out
        r = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), deg)
        cols = self.indices[self._row_offsets(users.clamp_min(0), deg)]
        out[r, cols] = 1.0
        return out

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(M,)`` bool: whether ``(users[m], items[m])`` is an interaction."""
        if self.keys.numel() == 0:
            return torch.zeros_like(items, dtype=torch.bool)
        key = users * (self.num_items + 1) + items
        pos = torch.searchsorted(self.keys, key).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == key

    def positives(
        self, users: torch.Tensor, per_user: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive pairs of ``users``.

        Args:
            users: ``(B,)`` user indices.
            per_user: ``None``: every interaction of each user once (an epoch over the users is an epoch
                over the training interactions, as RecBole's); ``k``: ``k`` positives drawn uniformly per
                user with replacement (LightGCN's reference sampler). Users without items give nothing.

        Returns:
            ``(users (M,), items (M,))``.
        """
        deg = self.degrees(users)
        if per_user is None:
            u = torch.repeat_interleave(users, deg)
            return u, self.indices[self._row_offsets(users, deg)]
        if per_user < 1:
            raise ValueError(f"per_user must be >= 1 or None, got {per_user}.")
        keep = deg > 0
        u = users[keep].repeat_interleave(per_user)
        d = deg[keep].repeat_interleave(per_user)
        offset = (torch.rand(u.shape, device=u.device) * d).long().clamp_max(d - 1)
        return u, self.indices[self.indptr[u] + offset]

    def negatives(self, users: torch.Tensor, max_rounds: int = 100) -> torch.Tensor:
        """``(M,)`` items drawn uniformly from ``1..N`` minus each user's items (rejection sampling)."""
        neg = torch.randint(1, self.num_items + 1, users.shape, device=users.device)
        for _ in range(max_rounds):
            hit = self.contains(users, neg)
            if not bool(hit.any()):
                return neg
            neg[hit] = torch.randint(1, self.num_items + 1, (int(hit.sum()),), device=users.device)
        raise RuntimeError(
            f"could not draw negatives outside the users' items in {max_rounds} rounds: some user has (nearly) "
            "every item; drop such users from the dataset or use a larger catalogue."
        )

    def sample(
        self, users: torch.Tensor, per_user: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BPR triples ``(users, positives, negatives)`` for ``users`` (see :meth:`positives`)."""
        u, pos = self.positives(users, per_user)
        return u, pos, self.negatives(u)

    def _row_offsets(self, users: torch.Tensor, deg: torch.Tensor) -> torch.Tensor:
        """Flat positions in ``indices`` of every entry of the rows of ``users`` (lengths ``deg``)."""
        starts = torch.repeat_interleave(self.indptr[users], deg)
        first = torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        return starts + torch.arange(int(deg.sum()), device=deg.device) - first
