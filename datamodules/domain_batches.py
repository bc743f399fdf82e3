"""Datasets and collate functions of multi-domain batches: the sequential ones plus ``domain (B,)``.

Each example carries the index of its user's domain (into ``catalog["domains"]``), so a model can rank and
take its softmax inside the sample's own domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmrec.datamodules.sequence_batches import EvalSequences, TrainSequences, collate_eval, collate_train
from mmrec.datamodules.splits import EvalSplit


class DomainTrainSequences(TrainSequences):
    """:class:`TrainSequences` whose examples also carry the user's domain index."""

    def __init__(
        self,
        users: Sequence[int],
        sequences: Sequence[Sequence[int]],
        max_len: int,
        user_domain: Sequence[int],
    ) -> None:
        super().__init__(users, sequences, max_len)
        self.user_domain = list(user_domain)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        out = super().__getitem__(idx)
        out["domain"] = self.user_domain[out["user"]]
        return out


class DomainEvalSequences(EvalSequences):
    """:class:`EvalSequences` whose examples also carry the user's domain index."""

    def __init__(
        self, split: EvalSplit, max_len: int, mask_history: bool, user_domain: Sequence[int]
    ) -> None:
        super().__init__(split, max_len, mask_history)
        self.user_domain = list(user_domain)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        out = super().__getitem__(idx)
        out["domain"] = self.user_domain[out["user"]]
        return out


def collate_domain_train(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """:func:`~mmrec.datamodules.sequence_batches.collate_train` plus ``domain (B,)``."""
    out = collate_train(examples)
    out["domain"] = torch.tensor([e["domain"] for e in examples], dtype=torch.long)
    return out


def collate_domain_eval(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """:func:`~mmrec.datamodules.sequence_batches.collate_eval` plus ``domain (B,)``."""
    out = collate_eval(examples)
    out["domain"] = torch.tensor([e["domain"] for e in examples], dtype=torch.long)
    return out
