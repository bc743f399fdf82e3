"""Samplers that shard data over distributed ranks without changing what is trained or measured.

Lightning replaces a DataLoader's sampler by a ``DistributedSampler`` under DDP unless the sampler already is
one. Its default does two things mmrec cannot accept: for evaluation it **pads** the last shard with
duplicated users (Beauty's 22,363 test users were counted as 22,364 and NDCG@10 moved), and for training it
reshuffles the length-grouped order index by index (the batches lose their similar lengths). The samplers
here subclass ``DistributedSampler`` so that Lightning leaves them alone, and shard by **whole batches**:

- :class:`EvalShardSampler`: contiguous blocks of evaluation batches per rank, no padding, no duplicate. Each
  batch holds exactly the rows it holds in a one-process run (same padding trimmed, same shapes), so the
  per-user values, and with :class:`~mmrec.metrics.FullRankingEvaluator`'s exact sums the metrics, are
  identical to one process.
- :class:`LengthGroupedSampler`: the length-grouped training order (same on every rank, from
  ``seed + epoch``), dealt out batch by batch: rank ``r`` takes batches ``r, r + W, r + 2W...``; the list is
  padded with batches from its start so that every rank runs the same number of steps (DDP's collectives need
  it). Lightning calls :meth:`LengthGroupedSampler.set_epoch` every epoch, so a resumed run continues the order
  of an uninterrupted one.

Without an initialised process group both are one-rank samplers (``world_size = 1``).

Example:
    >>> s = EvalShardSampler(10, batch_size=3, num_replicas=2, rank=1)
    >>> list(s)  # batches [0,1,2] [3,4,5] | [6,7,8] [9]
    [6, 7, 8, 9]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["EvalShardSampler", "LengthGroupedSampler", "world_and_rank"]


def world_and_rank(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world size, rank)``: the given values, else the initialised process group's, else ``(1, 0)``."""
    initialised = dist.is_available() and dist.is_initialized()
    world = int(num_replicas) if num_replicas is not None else (dist.get_world_size() if initialised else 1)
    r = int(rank) if rank is not None else (dist.get_rank() if initialised else 0)
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"rank must be in [0, num_replicas); got rank {r} of {world}.")
    return world, r


class _Sized:
    """A stand-in dataset of ``n`` rows for ``DistributedSampler.__init__`` (it only reads ``len``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class EvalShardSampler(DistributedSampler):
    """Evaluation order ``0..n-1`` cut into batches of ``batch_size``; rank ``r`` gets a contiguous block of
    whole batches (the first ``nb % W`` ranks one batch more). No padding: every row is visited once over all
    ranks, and each batch equals the one-process batch.

    Args:
        num_rows: dataset length.
        batch_size: the DataLoader's batch size (must be the same, so that batches line up).
        num_replicas: world size (default: the process group's, or 1).
        rank: this process's rank (default: the process group's, or 0).
        order: visit the rows in this order (a permutation of ``0..num_rows-1``, e.g. by history length so
            that each batch trims most of its padding); default ``0..num_rows-1``.

    Example:
        >>> [list(EvalShardSampler(7, 2, num_replicas=3, rank=r)) for r in range(3)]
        [[0, 1, 2, 3], [4, 5], [6]]
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        order: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        world, r = world_and_rank(num_replicas, rank)
        super().__init__(_Sized(num_rows), num_replicas=world, rank=r, shuffle=False, drop_last=False)
        num_batches = -(-num_rows // batch_size)
        per, extra = divmod(num_batches, world)
        first = r * per + min(r, extra)
        last = first + per + (1 if r < extra else 0)
        self.start = min(first * batch_size, num_rows)
        self.stop = min(last * batch_size, num_rows)
        self.num_samples = self.stop - self.start
        self.total_size = num_rows
        if order is not None and len(order) != num_rows:
            raise ValueError(f"order must be a permutation of the {num_rows} rows; got {len(order)} entries.")
        self.order = None if order is None else np.asarray(order, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        if self.order is None:
            return iter(range(self.start, self.stop))
        return iter(self.order[self.start : self.stop].tolist())

    def __len__(self) -> int:
        return self.num_samples


class LengthGroupedSampler(DistributedSampler):
    """Random order in which consecutive ``batch_size`` indices have similar lengths, sharded per rank.

    Indices are shuffled, cut into pools of ``pool_batches * batch_size``, sorted by length inside each
    pool and cut into batches whose order is shuffled again (the one short batch, if any, goes last so that
    the DataLoader's batches line up with the sampler's). With left padding trimmed per batch, this cuts the
    cost of datasets with short histories several-fold without changing what the model sees. Every rank
    draws the same order from ``seed + epoch`` and keeps batches ``rank, rank + W, ...`` (padded to a
    multiple of ``W`` with batches from the start), so runs are reproducible and ranks see disjoint batches.

    The epoch is set by :meth:`set_epoch` (Lightning calls it before each epoch); without it each iteration
    advances the epoch by one.

    Args:
        lengths: length of each example.
        batch_size: the DataLoader's batch size.
        seed: base seed.
        pool_batches: batches per sorted pool (larger = more uniform lengths, less randomness).
        num_replicas: world size (default: the process group's, or 1).
        rank: this process's rank (default: the process group's, or 0).

    Example:
        >>> s = LengthGroupedSampler([1, 2, 3, 4, 5], batch_size=2, num_replicas=2, rank=0)
        >>> len(s), len(LengthGroupedSampler([1, 2, 3, 4, 5], batch_size=2, num_replicas=2, rank=1))
        (3, 4)
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        pool_batches: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        world, r = world_and_rank(num_replicas, rank)
        self.lengths = np.asarray(lengths)
        super().__init__(_Sized(len(self.lengths)), num_replicas=world, rank=r, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.pool = max(1, pool_batches) * batch_size
        n = len(self.lengths)
        num_batches = -(-n // batch_size)
        self.batches_per_rank = -(-num_batches // world)
        # batch sizes are known without drawing: all full but the last one when n % batch_size (placed last)
        sizes = [batch_size] * num_batches
        if num_batches and n % batch_size:
            sizes[-1] = n % batch_size
        padded = sizes + [sizes[i % num_batches] for i in range(self.batches_per_rank * world - num_batches)]
        self.num_samples = sum(padded[r::world])
        self.total_size = n

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` at the next iteration (called by Lightning every epoch)."""
        self.epoch = int(epoch)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batch order of ``epoch`` (the same on every rank), before sharding."""
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.lengths))
        out: list[np.ndarray] = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            out.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        shuffled = [out[b] for b in rng.permutation(len(out))]
        full = [b for b in shuffled if len(b) == self.batch_size]
        return full + [b for b in shuffled if len(b) != self.batch_size]

    def _rank_batches(self, epoch: int) -> np.ndarray:
        batches = self.batches(epoch)
        if not batches:
            return np.zeros(0, dtype=np.int64)
        missing = self.batches_per_rank * self.num_replicas - len(batches)
        padded = batches + [batches[i % len(batches)] for i in range(missing)]
        return np.concatenate(padded[self.rank :: self.num_replicas])

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch = epoch + 1  # Lightning's set_epoch overrides this before the next epoch
        return iter(self._rank_batches(epoch).tolist())

    def __len__(self) -> int:
        return self.num_samples
