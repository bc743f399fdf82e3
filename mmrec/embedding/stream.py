"""Streaming webdataset shards through DataLoader workers: each shard read once, by one worker of one rank.

:class:`ShardStream` is an ``IterableDataset`` over the shards a rank was dealt
(:func:`~mmrec.embedding.data.assign_chunks`). Inside the DataLoader, worker ``w`` of ``W`` takes every
``W``-th of them, so no shard is read twice and none is skipped; each worker reads its shards front to back,
decodes and preprocesses every sample (:func:`~mmrec.embedding.data.build_item`) and yields collated batches
that never cross a shard boundary. Every batch names its shard (``chunk``); the last batch of a shard says so
(``last``) and carries the sha256 and size of the shard's bytes, so the part writer knows when a shard's part
is complete without knowing its size in advance. A shard that cannot be read yields one batch with an
``error`` message instead (raised as :class:`~mmrec.embedding.sources.ShardError` in the main process, so the
message is not buried in a worker traceback).

Example:
    >>> stream = ShardStream(source, ["image"], "image", encoder.preprocess, {}, 64, Collator(encoder.collate))  # doctest: +SKIP
    >>> stream.assign([0, 2, 4])  # this rank's shards  # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, collate_fn=passthrough)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from mmrec.embedding.data import Collator, Item, build_item
from mmrec.embedding.sources import ShardError, ShardReading, ShardSample, ShardSource


def passthrough(batch: Any) -> Any:
    """DataLoader ``collate_fn`` for datasets that yield finished batches (a module-level function, so
    worker processes can be started with any multiprocessing method)."""
    return batch


class ShardStream(torch.utils.data.IterableDataset):
    """The samples of some shards, decoded, preprocessed and collated into batches, shard after shard.

    Args:
        source: the shards.
        columns: input column(s).
        modality: ``image`` / ``audio`` / ``video`` / ``text``.
        preprocess: the encoder's ``preprocess``.
        decode_args: options for the media decoder.
        batch_size: items per batch (the last batch of a shard may be smaller).
        collate: the collator.
    """

    def __init__(
        self,
        source: ShardSource,
        columns: Sequence[str],
        modality: str,
        preprocess: Callable[[Any], Any],
        decode_args: dict[str, Any],
        batch_size: int,
        collate: Collator,
    ) -> None:
        super().__init__()
        self.source = source
        self.columns = list(columns)
        self.modality = modality
        self.preprocess = preprocess
        self.decode_args = dict(decode_args)
        self.batch_size = batch_size
        self.collate = collate
        self.shards: list[int] = []

    def assign(self, shards: Sequence[int]) -> None:
        """The shards this rank reads (before the DataLoader starts its workers)."""
        self.shards = list(shards)

    def worker_shards(self) -> tuple[int, list[int]]:
        """``(worker id, its shards)``: worker ``w`` of ``W`` takes every ``W``-th shard of the rank's."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return 0, list(self.shards)
        return int(info.id), self.shards[info.id :: info.num_workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, shards = self.worker_shards()
        for k in shards:
            yield from self._batches(k, worker)

    def _item(self, pos: int, sample: ShardSample) -> Item:
        return build_item(
            pos,
            sample.item_id,
            lambda: self.source.load_sample(sample, self.columns, self.modality, **self.decode_args),
            lambda: f"{sample.shard}:{sample.key}",
            self.preprocess,
        )

    def _batch(self, k: int, items: list[Item], worker: int, *, last: bool) -> dict[str, Any]:
        batch = self.collate(items)
        batch.update(chunk=k, last=last, worker=worker)
        return batch

    def _batches(self, k: int, worker: int) -> Iterator[dict[str, Any]]:
        reading = ShardReading()
        pending: list[Item] = []
        try:
            for pos, sample in enumerate(self.source.read(k, reading)):
                if len(pending) == self.batch_size:  # a full batch goes out once we know more follow
                    yield self._batch(k, pending, worker, last=False)
                    pending = []
                pending.append(self._item(pos, sample))
        except ShardError as e:
            yield {"chunk": k, "error": str(e), "worker": worker}
            return
        batch = self._batch(k, pending, worker, last=True)
        batch.update(shard=self.source.urls[k], shard_sha256=reading.sha256, shard_bytes=reading.nbytes)
        yield batch
