"""Deterministic train / validation / test splits of user sequences (DESIGN §6).

Two protocols:

- **leave-one-out by time**: the last interaction of each user is the test target, the second to last the
  validation target, the rest is training. Users with fewer than 3 interactions are trained on but cannot
  be evaluated; they are counted in :attr:`SplitResult.not_evaluated` (and logged), never dropped silently.
- **given**: the dataset's ``split`` column (0 train, 1 valid, 2 test; e.g. MMRec's ``x_label``). A user
  may have several validation / test targets; history for the test = train + valid interactions.

Example:
    >>> seqs = [[1, 2, 3, 4], [5, 6]]
    >>> s = leave_one_out(seqs)
    >>> s.train, s.valid.targets, s.test.histories, s.not_evaluated
    ([[1, 2], [5, 6]], [[3]], [[1, 2, 3]], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalSplit:
    """Evaluation examples of one split, aligned lists (one entry per evaluated user).

    Attributes:
        users: user indices.
        histories: item indices the model sees (chronological).
        targets: held-out item indices to rank (one for leave-one-out).
        exclude: items masked from the ranking (the user's known items); targets are never masked.
    """

    users: list[int] = field(default_factory=list)
    histories: list[list[int]] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)
    exclude: list[list[int]] = field(default_factory=list)

    @classmethod
    def full_histories(cls, sequences: list[list[int]]) -> EvalSplit:
        """Every user with their whole sequence as history and nothing held out (for ``predict``)."""
        return cls(
            users=list(range(len(sequences))),
            histories=[list(s) for s in sequences],
            targets=[[] for _ in sequences],
            exclude=[sorted(set(s)) for s in sequences],
        )

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class SplitResult:
    """Training sequences per user (index = user) plus validation and test examples."""

    train: list[list[int]]
    valid: EvalSplit
    test: EvalSplit
    not_evaluated: int = 0
    protocol: str = "leave-one-out"


def leave_one_out(sequences: Sequence[Sequence[int]]) -> SplitResult:
    """Leave-one-out by time over chronological per-user item sequences.

    Args:
        sequences: ``sequences[u]`` = user ``u``'s item indices in time order.

    Returns:
        The split; users with fewer than 3 interactions keep their whole sequence for training only.
    """
    train: list[list[int]] = []
    valid, test = EvalSplit(), EvalSplit()
    not_evaluated = 0
    for u, seq in enumerate(sequences):
        seq = list(seq)
        if len(seq) < 3:
            train.append(seq)
            not_evaluated += 1
            continue
        train.append(seq[:-2])
        valid.users.append(u)
        valid.histories.append(seq[:-2])
        valid.targets.append([seq[-2]])
        valid.exclude.append(sorted(set(seq[:-2])))
        test.users.append(u)
        test.histories.append(seq[:-1])
        test.targets.append([seq[-1]])
        test.exclude.append(sorted(set(seq[:-1])))
    return SplitResult(train=train, valid=valid, test=test, not_evaluated=not_evaluated)


def given_split(sequences: Sequence[Sequence[int]], split_codes: Sequence[Sequence[int]]) -> SplitResult:
    """Split by a given per-interaction code (0 train, 1 valid, 2 test).

    Args:
        sequences: per-user item indices (file or time order).
        split_codes: per-user codes aligned with ``sequences``.

    Returns:
        The split; users without a validation (test) interaction are absent from that split and users
        without any held-out interaction are counted in ``not_evaluated``.
    """
    train: list[list[int]] = []
    valid, test = EvalSplit(), EvalSplit()
    not_evaluated = 0
    for u, (seq, codes) in enumerate(zip(sequences, split_codes, strict=True)):
        seq_a = np.asarray(seq, dtype=np.int64)
        codes_a = np.asarray(codes, dtype=np.int64)
        tr = seq_a[codes_a == 0].tolist()
        va = seq_a[codes_a == 1].tolist()
        te = seq_a[codes_a == 2].tolist()
        train.append(tr)
        if va:
            valid.users.append(u)
            valid.histories.append(tr)
            valid.targets.append(sorted(set(va)))
            valid.exclude.append(sorted(set(tr)))
        if te:
            test.users.append(u)
            test.histories.append(tr + va)
            test.targets.append(sorted(set(te)))
            test.exclude.append(sorted(set(tr + va)))
        if not va and not te:
            not_evaluated += 1
    return SplitResult(train=train, valid=valid, test=test, not_evaluated=not_evaluated, protocol="given")
