"""Negative controls for training data: datasets a working model must NOT learn anything useful from.

:class:`ShuffledTargets` permutes the next-item targets of a training set across all users and positions.
Every item keeps its training frequency (so popularity can still be learned) but a history no longer says
anything about what follows it. A model trained on it can at best rank by popularity: when the quality
harness (``mmrec bench quality``) sees such a model beat MostPop, the harness, not the model, is broken.

Example:
    >>> base = [{"user": 0, "input_ids": [0, 1, 2], "target_ids": [0, 2, 3]},
    ...         {"user": 1, "input_ids": [4, 5, 6], "target_ids": [5, 6, 7]}]
    >>> shuffled = ShuffledTargets(base, seed=0)
    >>> sorted(t for i in range(2) for t in shuffled[i]["target_ids"] if t)  # same multiset of targets
    [2, 3, 5, 6, 7]
    >>> [t == 0 for t in shuffled[0]["target_ids"]]  # padding stays where it was
    [True, False, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset


class ShuffledTargets(Dataset):
    """A training dataset whose ``target_ids`` are permuted across all examples (padding ``0`` kept in place).

    The permutation is drawn once from ``seed``, so every epoch sees the same (wrong) targets, as a real
    dataset would. Attributes of the wrapped dataset (``examples``, ``max_len``...) are reachable on the
    wrapper, so loaders built for the wrapped dataset take it unchanged.

    Args:
        base: a map-style dataset of dicts with a ``target_ids`` list (0 = no target).
        seed: seeds the permutation.
    """

    def __init__(self, base: Sequence[Mapping[str, Any]] | Dataset, seed: int = 0) -> None:
        self.base = base
        items = [dict(base[i]) for i in range(len(base))]  # type: ignore[arg-type]
        flat = np.fromiter((t for e in items for t in e["target_ids"] if t), dtype=np.int64)
        perm = np.random.default_rng(seed).permutation(flat)
        pos = 0
        self._targets: list[list[int]] = []
        for e in items:
            row = []
            for t in e["target_ids"]:
                if t:
                    row.append(int(perm[pos]))
                    pos += 1
                else:
                    row.append(0)
            self._targets.append(row)

    def __len__(self) -> int:
        return len(self._targets)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = dict(self.base[idx])
        item["target_ids"] = list(self._targets[idx])
        return item

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.base, name)
