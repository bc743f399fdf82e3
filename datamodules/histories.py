"""Canonical interactions -> per-user item sequences, their timestamps and the user x item count matrix.

Items are indexed ``1..N`` in the dataset's item order, 0 is padding; users come in sorted user-id order
(the order of the interactions table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.data.canonical import DatasetError


def sequences_by_user(
    interactions: pd.DataFrame, item_index: Mapping[str, int]
) -> tuple[list[str], list[list[int]], list[list[int]] | None]:
    """Group canonical interactions (sorted by user, time) into per-user item-index sequences.

    Returns:
        ``(user_ids, sequences, split_codes)``; ``split_codes`` is None unless a ``split`` column exists.
    """
    users = interactions["user_id"].to_numpy()
    items = interactions["item_id"].map(item_index)
    if items.isna().any():
        bad = interactions.loc[items.isna(), "item_id"].head(3).tolist()
        raise DatasetError(
            f"interactions refer to items missing from items.parquet, e.g. {bad}; re-run the converter."
        )
    items_a = items.to_numpy(dtype=np.int64)
    codes = interactions["split"].to_numpy(dtype=np.int64) if "split" in interactions.columns else None
    # interactions are sorted by user: boundaries where the user changes
    change = np.nonzero(users[1:] != users[:-1])[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(users)]])
    user_ids = [str(users[s]) for s in starts]
    seqs = [items_a[s:e].tolist() for s, e in zip(starts, ends)]
    split_codes = [codes[s:e].tolist() for s, e in zip(starts, ends)] if codes is not None else None
    return user_ids, seqs, split_codes


def timestamps_by_user(interactions: pd.DataFrame) -> list[list[int]]:
    """Per-user interaction times, aligned with :func:`sequences_by_user` (interactions sorted by user, time)."""
    users = interactions["user_id"].to_numpy()
    times = interactions["timestamp"].to_numpy(dtype=np.int64)
    change = np.nonzero(users[1:] != users[:-1])[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(users)]])
    return [times[s:e].tolist() for s, e in zip(starts, ends)]


def interaction_matrix(sequences: Sequence[Sequence[int]], num_users: int, num_items: int) -> sp.csr_matrix:
    """``(num_users, num_items + 1)`` CSR matrix of interaction counts; row ``u`` counts ``sequences[u]``.

    Example:
        >>> interaction_matrix([[1, 2, 2], [3]], 2, 3).toarray()
        array([[0., 1., 2., 0.],
               [0., 0., 0., 1.]], dtype=float32)
    """
    rows = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    cols = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=len(rows))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(num_users, num_items + 1))
