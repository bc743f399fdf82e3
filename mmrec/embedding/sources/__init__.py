"""Where ``mmrec embed`` reads items from: a canonical dataset folder, or webdataset tar shards streamed from
local files, URLs, ``pipe:`` commands or object stores.

One job per module:

- :mod:`~mmrec.embedding.sources.base`: :class:`MissingValue`, :class:`ShardError`, text joining;
- :mod:`~mmrec.embedding.sources.dataset`: :class:`DatasetSource` (random access, ``items.parquet`` order);
- :mod:`~mmrec.embedding.sources.shard_urls`: what ``shards:`` accepts and how each shard is opened;
- :mod:`~mmrec.embedding.sources.tar_stream`: safe streaming of tar members grouped into samples;
- :mod:`~mmrec.embedding.sources.shards`: :class:`ShardSource` (one shard at a time, in order);
- :mod:`~mmrec.embedding.sources.shard_writer`: :func:`write_shards` (``mmrec shard``).

Example:
    >>> open_source(None, "https://host/media-{000000..000003}.tar").num_shards
    4
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mmrec.embedding.sources.base import MissingValue, ShardError, is_null, join_text
from mmrec.embedding.sources.dataset import DatasetSource
from mmrec.embedding.sources.shard_urls import expand_shards, is_url, open_shard, shard_label
from mmrec.embedding.sources.shard_writer import (
    SHARD_PATTERN,
    TEXT_FIELDS,
    ShardReport,
    safe_key,
    write_shards,
)
from mmrec.embedding.sources.shards import DEFAULT_EXTENSIONS, ShardReading, ShardSample, ShardSource
from mmrec.embedding.sources.tar_stream import check_member_name, iter_tar_samples

Source = DatasetSource | ShardSource


def open_source(
    dataset: str | os.PathLike[str] | None, shards: str | Sequence[str] | None
) -> DatasetSource | ShardSource:
    """The source named by a recipe (exactly one of ``dataset`` / ``shards``)."""
    if dataset is not None:
        return DatasetSource(dataset)
    if shards is not None:
        return ShardSource(shards)
    raise ValueError("give a dataset folder or shards")


__all__ = [
    "DEFAULT_EXTENSIONS",
    "SHARD_PATTERN",
    "TEXT_FIELDS",
    "DatasetSource",
    "MissingValue",
    "ShardError",
    "ShardReading",
    "ShardReport",
    "ShardSample",
    "ShardSource",
    "Source",
    "check_member_name",
    "expand_shards",
    "is_null",
    "is_url",
    "iter_tar_samples",
    "join_text",
    "open_shard",
    "open_source",
    "safe_key",
    "shard_label",
    "write_shards",
]
