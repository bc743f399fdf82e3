"""Next-item examples and their batches: training windows over user sequences, ranking examples of an
evaluation split, and the collate functions that stack them (left-padded, all-padding columns trimmed).

Batches (dicts of tensors), ``L`` the longest history in the batch (at most ``max_len``):

- train: ``user (B,)``, ``input_ids (B, L)``, ``target_ids (B, L)`` (next item at each position, 0 = no
  target);
- ranking: ``user (B,)``, ``input_ids (B, L)``, ``targets (B, T)`` (``-1`` padding), ``exclude_rows (E,)``
  and ``exclude_cols (E,)`` (items masked from the ranking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.datamodules.splits import EvalSplit


def left_pad(seq: Sequence[int], length: int) -> list[int]:
    """Keep the last ``length`` items of ``seq``, left-padded with 0."""
    seq = list(seq)[-length:] if length > 0 else []
    return [0] * (length - len(seq)) + seq


TrainExamples = Literal["windows", "last"]


def window_ends(length: int, max_len: int, stride: int) -> list[int]:
    """Where the training windows of one sequence end, most recent first.

    A window ending at ``e`` (exclusive) predicts ``seq[e - k]`` from ``seq[: e - k]`` for the targets
    ``seq[max(1, e - max_len) : e]`` and is credited only with the last ``stride`` of them (the earlier ones
    belong to the next window), so every target ``seq[1:]`` is trained on exactly once, with at least
    ``max_len - stride`` items of context unless it is within the first ``max_len`` of the sequence.

    Args:
        length: sequence length ``n`` (``n - 1`` targets).
        max_len: model input length.
        stride: targets credited per window, ``1..max_len``.

    Returns:
        ``[n, n - stride, n - 2 * stride, ...]`` down to the last end that still has a target (``> 1``).

    Example:
        >>> window_ends(12, 5, 5), window_ends(12, 5, 3), window_ends(1, 5, 5)
        ([12, 7, 2], [12, 9, 6, 3], [])
    """
    return list(range(length, 1, -stride))


class TrainSequences(Dataset):
    """Next-item training examples: windows of ``max_len`` items over each user's training sequence.

    ``examples="windows"`` (default) covers every target of every user: the sequence is cut from its end into
    windows of ``max_len`` targets (:func:`window_ends`) and each target is credited in exactly one window,
    which is what RecBole's one-example-per-prefix data gives at a fraction of the cost (one forward pass
    scores ``max_len`` targets). ``examples="last"`` keeps only the most recent ``max_len + 1`` items per
    user (one example per user), as the original SASRec does; on long histories it never trains on most
    targets (MovieLens-100k: 40% of them are ever seen) and gives few optimiser steps per epoch.

    Examples are ``(user, end)`` pairs over the given sequences (no copies), so memory grows with the
    number of windows only.

    Args:
        users: user index of each sequence.
        sequences: chronological item indices (``1..N``).
        max_len: model input length.
        examples: ``"windows"`` or ``"last"``.
        stride: targets credited per window (``None`` = ``max_len``: windows do not overlap). A smaller
            stride gives every target at least ``max_len - stride`` items of context, at
            ``max_len / stride`` times the cost.

    Example:
        >>> ds = TrainSequences([0], [[1, 2, 3, 4, 5, 6, 7]], max_len=3)
        >>> [(e["input_ids"], e["target_ids"]) for e in ds]
        [([4, 5, 6], [5, 6, 7]), ([1, 2, 3], [2, 3, 4])]
        >>> ds = TrainSequences([0], [[1, 2, 3, 4, 5, 6, 7]], max_len=3, stride=2)
        >>> [(e["input_ids"], e["target_ids"]) for e in ds]
        [([4, 5, 6], [0, 6, 7]), ([2, 3, 4], [0, 4, 5]), ([0, 1, 2], [0, 2, 3])]
    """

    def __init__(
        self,
        users: Sequence[int],
        sequences: Sequence[Sequence[int]],
        max_len: int,
        examples: TrainExamples = "windows",
        stride: int | None = None,
    ) -> None:
        if examples not in ("windows", "last"):
            raise ValueError(f"examples must be 'windows' or 'last', got {examples!r}.")
        stride = max_len if stride is None else int(stride)
        if not 1 <= stride <= max_len:
            raise ValueError(f"stride must be between 1 and max_len ({max_len}), got {stride}.")
        self.max_len = max_len
        self.stride = stride
        self.mode = examples
        self.users = list(users)
        self.sequences = sequences
        rows: list[tuple[int, int]] = []
        for k, seq in enumerate(sequences):
            ends = window_ends(len(seq), max_len, stride)
            rows.extend((k, e) for e in (ends[:1] if examples == "last" else ends))
        #: ``(sequence index, window end)`` per example
        self.index = np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` items per example (inputs + 1), for length-grouped batching."""
        return np.minimum(self.index[:, 1], self.max_len + 1)

    def num_targets(self) -> int:
        """How many targets the examples credit (every ``seq[1:]`` item with ``examples="windows"``)."""
        return int(sum(int((np.asarray(self[i]["target_ids"]) > 0).sum()) for i in range(len(self))))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        k, end = (int(v) for v in self.index[idx])
        seq = self.sequences[k]
        start = max(0, end - self.max_len - 1)
        window = list(seq[start:end])
        targets = window[1:]
        if self.mode == "windows":
            credited = min(self.stride, len(targets))
            targets = [0] * (len(targets) - credited) + targets[len(targets) - credited :]
        return {
            "user": self.users[k],
            "input_ids": left_pad(window[:-1], self.max_len),
            "target_ids": left_pad(targets, self.max_len),
        }


class EvalSequences(Dataset):
    """Ranking examples (history, targets, items to exclude) of one split."""

    def __init__(self, split: EvalSplit, max_len: int, mask_history: bool) -> None:
        self.split = split
        self.max_len = max_len
        self.mask_history = mask_history

    def __len__(self) -> int:
        return len(self.split)

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` history length of each example as fed to the model (at most ``max_len``)."""
        return np.minimum([len(h) for h in self.split.histories], self.max_len)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        targets = self.split.targets[idx]
        exclude = [i for i in self.split.exclude[idx] if i not in set(targets)] if self.mask_history else []
        return {
            "user": self.split.users[idx],
            "input_ids": left_pad(self.split.histories[idx], self.max_len),
            "targets": list(targets),
            "exclude": exclude,
        }


def trim_left_padding(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop leading columns that are padding in every row of the first tensor (and the same columns of
    the others). Sequences are left-padded, so real items keep their positions relative to the end and
    the model output is unchanged, while short-history batches cost far less (Beauty: ~7 of 50 slots real).
    """
    real = (tensors[0] != 0).any(dim=0)
    if not bool(real.any()):
        return tuple(t[:, -1:] for t in tensors)
    first = int(real.nonzero()[0])
    return tuple(t[:, first:] for t in tensors)


def collate_train(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack training examples into ``user (B,)``, ``input_ids (B, L)``, ``target_ids (B, L)``.

    ``L`` is the longest history in the batch (at most ``max_len``): all-padding columns are trimmed.
    """
    inputs, targets = trim_left_padding(
        torch.tensor([e["input_ids"] for e in examples], dtype=torch.long),
        torch.tensor([e["target_ids"] for e in examples], dtype=torch.long),
    )
    return {
        "user": torch.tensor([e["user"] for e in examples], dtype=torch.long),
        "input_ids": inputs,
        "target_ids": targets,
    }


def collate_eval(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ranking examples; targets padded with -1, exclusions as sparse (row, col) pairs."""
    width = max(1, max(len(e["targets"]) for e in examples))
    targets = torch.full((len(examples), width), -1, dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    for r, e in enumerate(examples):
        targets[r, : len(e["targets"])] = torch.tensor(e["targets"], dtype=torch.long)
        rows.extend([r] * len(e["exclude"]))
        cols.extend(e["exclude"])
    return {
        "user": torch.tensor([e["user"] for e in examples], dtype=torch.long),
        "input_ids": trim_left_padding(torch.tensor([e["input_ids"] for e in examples], dtype=torch.long))[0],
        "targets": targets,
        "exclude_rows": torch.tensor(rows, dtype=torch.long),
        "exclude_cols": torch.tensor(cols, dtype=torch.long),
    }
