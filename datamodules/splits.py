"""Deterministic train / validation / test splits of user sequences (DESIGN §6).

Four protocols:

- **leave-one-out by time**: the last interaction of each user is the test target, the second to last the
  validation target, the rest is training. Users with fewer than 3 interactions are trained on but cannot
  be evaluated; they are counted in :attr:`SplitResult.not_evaluated` (and logged), never dropped silently.
- **given**: the dataset's ``split`` column (0 train, 1 valid, 2 test; e.g. MMRec's ``x_label``). A user
  may have several validation / test targets; history for the test = train + valid interactions.
- **cold items** (:func:`cold_item_split`): a seeded share of the items is withheld from training entirely;
  half of them are validation targets, half test targets, so every evaluated target is an item no model
  has trained on (where content features must pay).
- **temporal** (:func:`temporal_split`): one global time cut for all users; nothing after the cut is
  trained on, so no user's future leaks into another user's training data.

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
    #: items withheld from training (``cold-items``: validation + test items), sorted
    withheld: list[int] = field(default_factory=list)


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


def _eval_example(split: EvalSplit, user: int, history: list[int], target: int) -> None:
    split.users.append(user)
    split.histories.append(history)
    split.targets.append([target])
    split.exclude.append(sorted(set(history)))


def cold_item_split(
    sequences: Sequence[Sequence[int]], fraction: float, seed: int = 0
) -> SplitResult:
    """Item cold start: a seeded share of the items never appears in training.

    ``round(fraction * M)`` of the ``M`` items that occur in ``sequences`` are drawn with ``seed`` and
    withheld: every interaction with them is removed from the training sequences (as input and as target).
    The first half of the withheld items (in draw order) are validation items, the rest test items. A user's
    validation (test) example is their **last** interaction with a validation (test) item as the target, with
    the warm items before it as history (withheld items are never in a history). Users without such an
    interaction, or with no warm item before it, are not in that split.

    Args:
        sequences: ``sequences[u]`` = user ``u``'s item indices in time order.
        fraction: share of the items withheld, in ``(0, 1)``.
        seed: draws the withheld items (keep it fixed across model seeds).

    Returns:
        The split; ``withheld`` lists every withheld item, ``protocol`` is ``"cold-items"``.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1)`` or fewer than 2 items withheld.

    Example:
        >>> s = cold_item_split([[1, 2, 3, 4], [2, 4, 1], [3, 1]], fraction=0.5, seed=0)
        >>> s.withheld, s.train
        ([1, 3], [[2, 4], [2, 4], []])
        >>> s.valid.targets, s.valid.histories, s.test.targets, s.test.histories
        ([[3]], [[2]], [[1]], [[2, 4]])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1) (the share of items withheld), got {fraction}.")
    items = np.unique(np.fromiter((i for seq in sequences for i in seq), dtype=np.int64))
    k = round(fraction * len(items))
    if k < 2:
        raise ValueError(
            f"holdout_fraction {fraction} withholds {k} of {len(items)} items; at least 2 are needed (one for "
            "validation, one for test): raise holdout_fraction."
        )
    drawn = np.random.default_rng(seed).permutation(items)[:k]
    valid_items = {int(i) for i in drawn[: k // 2]}
    test_items = {int(i) for i in drawn[k // 2 :]}
    withheld = valid_items | test_items
    train: list[list[int]] = []
    valid, test = EvalSplit(), EvalSplit()
    not_evaluated = 0
    for u, seq in enumerate(sequences):
        seq = [int(i) for i in seq]
        train.append([i for i in seq if i not in withheld])
        evaluated = False
        for split, chosen in ((valid, valid_items), (test, test_items)):
            last = max((t for t, i in enumerate(seq) if i in chosen), default=None)
            if last is None:
                continue
            history = [i for i in seq[:last] if i not in withheld]
            if history:
                _eval_example(split, u, history, seq[last])
                evaluated = True
        not_evaluated += int(not evaluated)
    return SplitResult(
        train=train,
        valid=valid,
        test=test,
        not_evaluated=not_evaluated,
        protocol="cold-items",
        withheld=sorted(withheld),
    )


def temporal_cuts(timestamps: Sequence[Sequence[int]], fraction: float) -> tuple[int, int]:
    """The two global cut times of :func:`temporal_split`.

    The latest ``fraction`` of all interactions (by time) is held out: the validation window starts at the
    ``1 - fraction`` quantile of the interaction times, the test window at the ``1 - fraction / 2`` quantile.

    Returns:
        ``(valid_start, test_start)``: an interaction at time ``t`` is training if ``t < valid_start``,
        validation if ``valid_start <= t < test_start``, test if ``t >= test_start``.

    Example:
        >>> temporal_cuts([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], 0.4)
        (7, 9)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1) (the share of interactions held out), got {fraction}.")
    times = np.sort(np.fromiter((t for ts in timestamps for t in ts), dtype=np.int64))
    if len(times) == 0:
        raise ValueError("no interactions to cut.")
    n = len(times)
    valid_start = int(times[min(n - 1, int(n * (1.0 - fraction)))])
    test_start = int(times[min(n - 1, int(n * (1.0 - fraction / 2.0)))])
    return valid_start, test_start


def temporal_split(
    sequences: Sequence[Sequence[int]], timestamps: Sequence[Sequence[int]], fraction: float
) -> SplitResult:
    """A global temporal split: one pair of cut times for every user (:func:`temporal_cuts`).

    Training = every interaction before the validation cut. A user's validation example is their first
    interaction in the validation window, with their training items as history; their test example is their
    first interaction in the test window, with every earlier interaction (training + validation window) as
    history. Users with no history before the window (new users) are not evaluated in it. Items first seen
    after the cut are cold (never trained on).

    Args:
        sequences: per-user item indices in time order.
        timestamps: per-user interaction times aligned with ``sequences`` (non-decreasing).
        fraction: share of the interactions held out, latest first, in ``(0, 1)``.

    Example:
        >>> s = temporal_split([[1, 2, 3], [4, 5, 6]], [[1, 2, 9], [3, 4, 5]], fraction=0.4)
        >>> s.train, s.valid.targets, s.test.targets, s.test.histories
        ([[1, 2], [4]], [[5]], [[3], [6]], [[1, 2], [4, 5]])
    """
    valid_start, test_start = temporal_cuts(timestamps, fraction)
    train: list[list[int]] = []
    valid, test = EvalSplit(), EvalSplit()
    not_evaluated = 0
    for u, (seq, ts) in enumerate(zip(sequences, timestamps, strict=True)):
        seq_a = [int(i) for i in seq]
        ts_a = np.asarray(ts, dtype=np.int64)
        if len(ts_a) > 1 and bool((np.diff(ts_a) < 0).any()):
            raise ValueError(f"user {u}: timestamps are not in time order; sort interactions by (user, time).")
        n_train = int(np.searchsorted(ts_a, valid_start, side="left"))
        n_before_test = int(np.searchsorted(ts_a, test_start, side="left"))
        train.append(seq_a[:n_train])
        evaluated = False
        if n_train < n_before_test and n_train > 0:
            _eval_example(valid, u, seq_a[:n_train], seq_a[n_train])
            evaluated = True
        if n_before_test < len(seq_a) and n_before_test > 0:
            _eval_example(test, u, seq_a[:n_before_test], seq_a[n_before_test])
            evaluated = True
        not_evaluated += int(not evaluated)
    return SplitResult(train=train, valid=valid, test=test, not_evaluated=not_evaluated, protocol="temporal")
