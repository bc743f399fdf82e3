"""What is decided about one recipe entry before any network is built: its fingerprint, folders and chunking.

Example:
    >>> from mmrec.embedding import EmbedConfig
    >>> from mmrec.embedding.fingerprint import FileHashCache
    >>> from mmrec.embedding.sources import ShardSource
    >>> cfg = EmbedConfig.from_dict({"shards": "https://host/m-{0..2}.tar", "cache": "/tmp/c",
    ...     "encoders": [{"name": "text", "encoder": "text/minilm", "column": "title"}]})
    >>> src = ShardSource(cfg.shards)
    >>> plan = plan_entry(cfg, cfg.encoders[0], src, FileHashCache("/tmp/c"))
    >>> plan.store_dir.parent.name, part_plan(cfg, plan, src).num_chunks
    ('text', 3)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrec.embedding.config import EmbedConfig, EncoderEntry
from mmrec.embedding.fingerprint import FileHashCache, entry_fingerprint, preprocessing_key, weights_identity
from mmrec.embedding.parts import PartPlan
from mmrec.embedding.sources import DatasetSource, ShardSource


@dataclass
class EntryPlan:
    """Everything decided about one entry before any network is built."""

    entry: EncoderEntry
    fingerprint: str
    weights: str
    preprocessing: dict[str, Any]
    input_fingerprint: str
    name_dir: Path
    store_dir: Path
    partial_dir: Path

    @property
    def complete(self) -> bool:
        return (self.store_dir / "manifest.json").is_file()

    @property
    def lock_path(self) -> Path:
        """``<cache>/<name>/<fingerprint>.lock``: one writer per store (:class:`mmrec.store.lock.StoreLock`)."""
        return self.name_dir / f"{self.fingerprint}.lock"

    def partial_dir_for(self, cfg: EmbedConfig, rank: int, node_rank: int = 0) -> Path:
        """Where process ``rank`` writes its parts: ``<parts_dir or cache>/<name>/<fingerprint>.partial``."""
        return cfg.parts_path(rank, node_rank) / self.entry.name / f"{self.fingerprint}.partial"


def plan_entry(
    cfg: EmbedConfig, entry: EncoderEntry, source: DatasetSource | ShardSource, hashes: FileHashCache
) -> EntryPlan:
    """Compute an entry's fingerprint and folders (cheap: no model, no decoding; file hashes are cached)."""
    modality = entry.resolved_modality()
    weights = weights_identity(entry.init_args, hashes)
    pre = preprocessing_key(entry.init_args, entry.columns, modality, entry.decode_args)
    inputs = source.input_fingerprint(hashes, columns=entry.columns, modality=modality)
    fp = entry_fingerprint(
        encoder=entry.encoder,
        weights=weights,
        preprocessing=pre,
        dtype=cfg.store_dtype,
        input_fingerprint=inputs,
        columns=entry.columns,
    )
    name_dir = cfg.cache_path / entry.name
    plan = EntryPlan(
        entry=entry,
        fingerprint=fp,
        weights=weights,
        preprocessing=pre,
        input_fingerprint=inputs,
        name_dir=name_dir,
        store_dir=name_dir / fp,
        partial_dir=name_dir / f"{fp}.partial",
    )
    plan.partial_dir = plan.partial_dir_for(cfg, 0)
    return plan


def keys_digest(keys: Sequence[str]) -> str:
    """sha256 over the keys in order (NUL-separated)."""
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def dataset_keys(source: DatasetSource | ShardSource) -> list[str] | None:
    """The item ids in store order when they are known before reading (a dataset), else ``None``."""
    return [str(k) for k in source.item_ids] if isinstance(source, DatasetSource) else None


def part_plan(
    cfg: EmbedConfig, plan: EntryPlan, source: DatasetSource | ShardSource, keys: list[str] | None = None
) -> PartPlan:
    """The chunking of an entry: fixed ranges of ``shard_size`` items of a dataset, or one chunk per shard."""
    if isinstance(source, ShardSource):
        return PartPlan(
            plan.partial_dir,
            num_items=None,
            shard_size=0,
            keys_digest=keys_digest(source.urls),
            shards=source.urls,
        )
    keys = keys if keys is not None else dataset_keys(source)
    assert keys is not None
    return PartPlan(
        plan.partial_dir, num_items=len(keys), shard_size=cfg.shard_size, keys_digest=keys_digest(keys)
    )
