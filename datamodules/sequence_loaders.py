"""DataLoaders of the sequential datamodules: length-grouped training batches and ranking batches, both
sharded over DDP ranks by whole batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.sampling import EvalShardSampler, LengthGroupedSampler
from mmrec.datamodules.sequence_batches import EvalSequences, TrainSequences


def length_grouped_loader(
    ds: TrainSequences,
    *,
    batch_size: int,
    seed: int,
    collate_fn: Any,
    num_workers: int,
    where: str,
    pool_batches: int = 50,
) -> DataLoader:
    """Training loader whose batches group sequences of similar length (less padding to trim), sharded over
    DDP ranks by whole batches (:class:`~mmrec.datamodules.sampling.LengthGroupedSampler`).

    Args:
        ds: training examples (:class:`TrainSequences`).
        batch_size, seed, collate_fn, num_workers: as ``DataLoader`` / :class:`LengthGroupedSampler`.
        where: what the data is (named in the error when nothing is trainable).
        pool_batches: batches per length-sorted pool (1 = plain shuffled batches).
    """
    if len(ds) == 0:
        raise DatasetError(f"{where}: no user has 2 or more training interactions; nothing to train on.")
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=LengthGroupedSampler(ds.lengths(), batch_size, seed=seed, pool_batches=pool_batches),
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # the loader's own generator: creating an iterator draws a worker base seed, and from the global
        # generator that draw would shift dropout / negatives depending on whether the epoch was resumed
        generator=torch.Generator().manual_seed(seed),
    )


def ranking_loader(
    ds: EvalSequences, *, batch_size: int, collate_fn: Any, num_workers: int, by_length: bool = True
) -> DataLoader:
    """Validation / test / predict loader, sharded over DDP ranks by whole batches without padding
    (:class:`~mmrec.datamodules.sampling.EvalShardSampler`), so every user is evaluated exactly once and each
    batch is the one-process batch (metrics identical to one process).

    Args:
        ds: ranking examples (:class:`EvalSequences` or a subclass).
        batch_size, collate_fn, num_workers: as ``DataLoader``.
        by_length: visit users by history length (stable), so that each batch's left padding trims to its
            own longest history: a user's metrics do not depend on the batch, and on short-history data
            (Beauty: ~9 of 50 slots real, a few long histories in every batch of 1024) the forward pass
            costs several times less. ``False``: user order (predictions).
    """
    order = np.argsort(ds.lengths(), kind="stable") if by_length else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=EvalShardSampler(len(ds), batch_size, order=order),
        collate_fn=collate_fn,
        num_workers=num_workers,
    )
