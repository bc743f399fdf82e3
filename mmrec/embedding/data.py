"""Torch data pieces of the embedding pipeline for a canonical dataset: items, batches of fixed chunks, collation.

Everything here runs without Lightning: :func:`build_item` decodes and preprocesses one item (in a
DataLoader worker) and never raises for bad input; :class:`ItemDataset` does it for item ``i`` of a dataset;
:class:`Collator` batches the valid items with the encoder's ``collate`` and carries the others as metadata;
:class:`ChunkBatchSampler` yields the fixed batches of the chunks a rank owns (:func:`assign_chunks`).
Streamed shards have their own iterable dataset (:mod:`mmrec.embedding.stream`) built on the same pieces.

Example:
    >>> list(ChunkBatchSampler(assign_chunks([0, 1, 2], rank=0, world_size=2), chunk_size=3, num_items=8, batch_size=2))
    [[0, 1], [2], [6, 7]]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmrec.embedding.sources import DatasetSource, MissingValue
from mmrec.encoders.media import MediaError


@dataclass
class Item:
    """One decoded + preprocessed item (or why it could not be)."""

    index: int
    key: str
    status: str  # "ok" | "missing" | "failed"
    value: Any = None
    reason: str | None = None
    source: str | None = None
    detail: str | None = None
    seconds: float = 0.0


def build_item(
    index: int,
    key: str,
    load: Callable[[], tuple[Any, str]],
    where: Callable[[], str],
    preprocess: Callable[[Any], Any],
) -> Item:
    """Decode (``load()``) and preprocess one item; any failure becomes an :class:`Item` with its reason.

    Args:
        index: the item's position (in the input, or in its shard).
        key: its id.
        load: returns ``(raw item, where it came from)``; raises ``MissingValue`` / ``MediaError``.
        where: describes the input's location when ``load`` failed.
        preprocess: the encoder's ``preprocess``.
    """
    t0 = time.perf_counter()

    def failed(reason: str, detail: str, source: str) -> Item:
        return Item(
            index,
            key,
            "failed",
            reason=reason,
            detail=detail,
            source=source,
            seconds=time.perf_counter() - t0,
        )

    try:
        raw, origin = load()
    except MissingValue:
        return Item(index, key, "missing", reason=MissingValue.reason, seconds=time.perf_counter() - t0)
    except MediaError as e:
        return failed(e.reason, e.message, where())
    except Exception as e:  # a decoder bug must not stop the batch either; it is recorded
        return failed("decode error", f"{type(e).__name__}: {e}", where())
    try:
        value = preprocess(raw)
    except MediaError as e:  # e.g. an audio clip too short for the encoder
        return failed(e.reason, e.message, origin)
    except Exception as e:
        return failed("preprocess error", f"{type(e).__name__}: {e}", origin)
    return Item(index, key, "ok", value=value, source=origin, seconds=time.perf_counter() - t0)


class ItemDataset(torch.utils.data.Dataset):
    """Map-style dataset: item ``i`` of a canonical dataset, decoded and preprocessed by the encoder.

    Runs in DataLoader workers. Any failure (missing file, corrupt media, empty text, an exception in
    ``preprocess``) is caught and returned as an :class:`Item` with ``status="failed"`` and its reason.

    Args:
        source: the dataset.
        keys: item ids in order.
        columns: input column(s).
        modality: ``image`` / ``audio`` / ``video`` / ``text``.
        preprocess: the encoder's ``preprocess``.
        decode_args: options for the media decoder.
    """

    def __init__(
        self,
        source: DatasetSource,
        keys: Sequence[str],
        columns: Sequence[str],
        modality: str,
        preprocess: Callable[[Any], Any],
        decode_args: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.keys = list(keys)
        self.columns = list(columns)
        self.modality = modality
        self.preprocess = preprocess
        self.decode_args = dict(decode_args or {})

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Item:
        return build_item(
            i,
            self.keys[i],
            lambda: self.source.load(i, self.columns, self.modality, **self.decode_args),
            lambda: self.source.where(i, self.columns, self.modality),
            self.preprocess,
        )


class Collator:
    """Collate :class:`Item` s: valid values go through the encoder's ``collate``, the rest is metadata.

    Returns a dict: ``index`` / ``keys`` / ``status`` / ``reasons`` / ``sources`` / ``details`` /
    ``seconds`` (one entry per item of the batch, in order) and ``inputs`` (the collated valid items,
    or ``None`` when none is valid).
    """

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Item]) -> dict[str, Any]:
        ok = [it.value for it in items if it.status == "ok"]
        return {
            "index": [it.index for it in items],
            "keys": [it.key for it in items],
            "status": [it.status for it in items],
            "reasons": [it.reason for it in items],
            "sources": [it.source for it in items],
            "details": [it.detail for it in items],
            "seconds": [it.seconds for it in items],
            "inputs": self.collate(ok) if ok else None,
        }


class ChunkBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Fixed batches of the given chunks: chunk ``k`` covers items ``[k*S, min((k+1)*S, N))`` and is cut
    into batches of ``batch_size`` that never cross its end.

    Example:
        >>> list(ChunkBatchSampler([1, 3], chunk_size=4, num_items=14, batch_size=3))
        [[4, 5, 6], [7], [12, 13]]
    """

    def __init__(self, chunks: Sequence[int], chunk_size: int, num_items: int, batch_size: int) -> None:
        self.chunks = list(chunks)
        self.chunk_size = chunk_size
        self.num_items = num_items
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for k in self.chunks:
            start, end = k * self.chunk_size, min((k + 1) * self.chunk_size, self.num_items)
            for b in range(start, end, self.batch_size):
                yield list(range(b, min(b + self.batch_size, end)))

    def __len__(self) -> int:
        n = 0
        for k in self.chunks:
            size = min((k + 1) * self.chunk_size, self.num_items) - k * self.chunk_size
            n += (size + self.batch_size - 1) // self.batch_size
        return n


def assign_chunks(todo: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Round-robin deal of the chunks still to do: the ``j``-th goes to rank ``j % world_size``.

    Example:
        >>> assign_chunks([0, 2, 3, 5, 7], rank=1, world_size=2)
        [2, 5]
    """
    return list(todo)[rank::world_size]
