"""VIP5 item indexing (how items are numbered in prompts) and the saved candidate lists of the direct tasks."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data.canonical import DatasetError

log = logging.getLogger("mmrec.datamodules.vip5_tasks")  # the VIP5 data logger, as before the split


# ------------------------------------------------------------------------------------------ indexing
def item_numbering(sequences: Sequence[Sequence[int]], num_items: int, method: str, seed: int) -> list[int]:
    """Identifier number of every item index (entry 0 unused).

    Args:
        sequences: per-user chronological item indices (1..N).
        num_items: N.
        method: ``"random"`` (a seeded random permutation of 1..N: identifiers carry no information) or
            ``"sequential"`` (P5's indexing: items numbered 1, 2, ... in order of first appearance while
            reading users' sequences one after the other; consecutive items of a user get consecutive
            numbers, which leaks the test item's neighbourhood into the identifier).
        seed: seeds the random permutation.

    Returns:
        ``numbers`` with ``numbers[i]`` the identifier number of item ``i`` (a permutation of 1..N).

    Example:
        >>> item_numbering([[3, 1], [2, 3]], 3, "sequential", 0)
        [0, 2, 3, 1]
    """
    if method == "random":
        perm = np.random.default_rng([seed, 7919]).permutation(num_items) + 1
        return [0, *perm.tolist()]
    if method != "sequential":
        raise ValueError(f"item_indexing must be 'random' or 'sequential', got {method!r}.")
    log.warning(
        "item_indexing: sequential (P5) numbers items in the order users consumed them, so a user's test "
        "item usually gets an identifier next to those in their history: this leaks the answer and inflates "
        "sequential-task metrics. Use item_indexing: random for fair results."
    )
    numbers = [0] * (num_items + 1)
    nxt = 1
    for seq in sequences:
        for it in seq:
            if numbers[it] == 0:
                numbers[it] = nxt
                nxt += 1
    for it in range(1, num_items + 1):  # items nobody interacted with
        if numbers[it] == 0:
            numbers[it] = nxt
            nxt += 1
    return numbers


# ------------------------------------------------------------------------------------------ negatives
@dataclass
class DirectCandidates:
    """Saved candidates of the direct task: column 0 is the positive, then ``n`` negatives.

    Attributes:
        users: ``(U,)`` user indices of the split.
        candidates: ``(U, n+1)`` item indices.
        path: the file they were read from / written to.
    """

    users: np.ndarray
    candidates: np.ndarray
    path: Path


def candidates_path(derived_dir: Path, fingerprint: str, seed: int, negatives: int) -> Path:
    """``<derived_dir>/vip5_direct_candidates-<fingerprint[:16]>-seed<seed>-n<negatives>.npz``."""
    return derived_dir / f"vip5_direct_candidates-{fingerprint[:16]}-seed{seed}-n{negatives}.npz"


def draw_negatives(
    positives: Sequence[int],
    known: Sequence[Sequence[int]],
    num_items: int,
    negatives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """For each row, the positive then ``negatives`` distinct items the user never interacted with.

    Raises:
        DatasetError: a user has interacted with too many items to draw ``negatives`` others.

    Example:
        >>> draw_negatives([2], [[1, 2]], 5, 3, np.random.default_rng(0))[0, 0]
        np.int64(2)
    """
    out = np.zeros((len(positives), negatives + 1), dtype=np.int64)
    for r, (pos, seen) in enumerate(zip(positives, known)):
        banned = set(seen) | {pos}
        if num_items - len(banned) < negatives:
            raise DatasetError(
                f"a user interacted with {len(banned)} of {num_items} items: cannot draw {negatives} negatives; "
                "lower negatives."
            )
        chosen: list[int] = []
        chosen_set: set[int] = set()
        while len(chosen) < negatives:
            draw = rng.integers(1, num_items + 1, size=2 * (negatives - len(chosen)) + 8)
            for it in draw.tolist():
                if it not in banned and it not in chosen_set:
                    chosen.append(it)
                    chosen_set.add(it)
                    if len(chosen) == negatives:
                        break
        out[r, 0] = pos
        out[r, 1:] = chosen
    return out


def load_or_draw_candidates(
    path: Path,
    splits: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    sequences: Sequence[Sequence[int]],
    num_items: int,
    negatives: int,
    seed: int,
    fingerprint: str,
) -> dict[str, DirectCandidates]:
    """Read the saved direct-task candidates, or draw them once (seeded) and save them atomically.

    Args:
        path: the ``.npz`` file (see :func:`candidates_path`).
        splits: ``{"valid": (users, positives), "test": (users, positives)}``.
        sequences: every user's full item sequence (negatives avoid all of them).
        num_items: N.
        negatives: negatives per user.
        seed: seeds the draw.
        fingerprint: dataset fingerprint, recorded and checked.
    """
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("fingerprint") != fingerprint or meta.get("negatives") != negatives:
                raise DatasetError(
                    f"{path} was drawn for another dataset version or negatives count; delete it to redraw."
                )
            out = {
                name: DirectCandidates(z[f"{name}_users"], z[f"{name}_candidates"], path) for name in splits
            }
        for name, (users, pos) in splits.items():
            c = out[name]
            if c.users.tolist() != list(users) or c.candidates[:, 0].tolist() != list(pos):
                raise DatasetError(f"{path} does not match the current {name} split; delete it to redraw.")
        return out
    rng = np.random.default_rng([seed, 104729])
    arrays: dict[str, Any] = {
        "meta": np.array(json.dumps({"fingerprint": fingerprint, "seed": seed, "negatives": negatives}))
    }
    out = {}
    for name, (users, pos) in splits.items():
        cand = draw_negatives(pos, [sequences[u] for u in users], num_items, negatives, rng)
        users_a = np.asarray(users, dtype=np.int64)
        arrays[f"{name}_users"] = users_a
        arrays[f"{name}_candidates"] = cand
        out[name] = DirectCandidates(users_a, cand, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        log.info(
            "direct-task candidates (1 positive + %d negatives, seed %d) saved to %s", negatives, seed, path
        )
    except OSError as e:
        log.warning(
            "could not save direct-task candidates to %s (%s); using them for this run only.", path, e
        )
    return out
