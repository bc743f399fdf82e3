"""Small builders shared by tests (toy canonical datasets and stores, written into tmp folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data.canonical import CanonicalDataset, write_dataset
from mmrec.store import EmbeddingStore, write_store


def toy_dataset(
    root: Path,
    *,
    num_items: int = 40,
    num_users: int = 60,
    min_len: int = 2,
    max_len: int = 10,
    seed: int = 0,
    name: str = "toy",
) -> CanonicalDataset:
    """A dataset where each user walks through consecutive items (a learnable sequential pattern)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {"item_id": [f"i{k:03d}" for k in range(num_items)], "title": [f"item {k}" for k in range(num_items)]}
    )
    rows = []
    for u in range(num_users):
        n = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, num_items))
        for t in range(n):
            rows.append(
                (f"u{u:03d}", f"i{(start + t) % num_items:03d}", 1000 + 10 * t, float(rng.integers(1, 6)))
            )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return write_dataset(root / name, items, inter, name=name, source_format="python")


def toy_store(
    root: Path, item_ids: list[str], dim: int = 8, seed: int = 0, name: str = "store"
) -> EmbeddingStore:
    """A random store over ``item_ids``."""
    rng = np.random.default_rng(seed)
    return write_store(
        root / name, item_ids, rng.normal(size=(len(item_ids), dim)).astype(np.float32), encoder="test/random"
    )
