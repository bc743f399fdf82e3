"""The sequential DataModule: user histories -> next-item batches (leave-one-out, given, cold-item or
global temporal split).

Items are indexed ``1..N`` in the dataset's item order (``items.parquet``), 0 is padding; users are
indexed ``0..U-1`` in sorted user-id order. Sequences are left-padded to ``max_len`` so the last position
always holds the most recent item.

Batches (dicts of tensors):

``L`` is the longest history in the batch (all-padding leading columns are trimmed), at most ``max_len``.

- train: ``user (B,)``, ``input_ids (B, L)``, ``target_ids (B, L)`` (next item at each position, 0 = no
  target). Each row is one window of ``max_len`` items of a user's training sequence; by default the windows
  cover every training target exactly once (:class:`TrainSequences`), so a user with a long history gives
  several rows.
- valid / test / predict: ``user (B,)``, ``input_ids (B, L)``, ``targets (B, T)`` (``-1`` padding;
  ``T = 1`` for leave-one-out), ``exclude_rows (E,)`` and ``exclude_cols (E,)`` (the user's known items,
  masked from the ranking when the protocol masks history, and always for ``predict``; column 0 is always
  excluded by the models).

Evaluation protocol: ``datamodule.protocol`` (:class:`~mmrec.eval_protocol.EvalProtocol`) says how validation
and test batches rank. **By default history is not masked** (preset ``recbole`` on leave-one-out, ``given`` on
a dataset's given split), as RecBole and the published sequential results do; ``protocol: masked`` /
``protocol: mmrec`` or ``mask_history: true`` mask it.

Example:
    >>> dm = SequentialDataModule("assets/demo", max_len=20)  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from mmrec.catalog import Catalog
from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.datamodules.controls import ShuffledTargets
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.sampling import EvalShardSampler, LengthGroupedSampler
from mmrec.datamodules.splits import (
    EvalSplit,
    SplitResult,
    cold_item_split,
    given_split,
    leave_one_out,
    temporal_split,
)
from mmrec.eval_protocol import HOLDOUT_SPLITS, EvalProtocol, preset
from mmrec.protocols import ModelInputs, TrainingWindowPreference
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

log = logging.getLogger(__name__)

SplitName = Literal["auto", "leave-one-out", "given", "cold-items", "temporal"]
SPLIT_NAMES: tuple[str, ...] = ("auto", "leave-one-out", "given", "cold-items", "temporal")


def resolve_user_path(path: str | os.PathLike[str], *, base: Path | None = None) -> Path:
    """Resolve a path given by the user (config or command line).

    Absolute paths and ``~`` are used as they are. A relative path is looked up first inside ``base`` (e.g.
    a dataset folder, for stores that converters write into it) when it exists there, otherwise against
    the current directory, as every command-line tool does.
    """
    p = Path(os.path.expandvars(str(path))).expanduser()
    if p.is_absolute():
        return p
    if base is not None and (base / p).exists():
        return (base / p).resolve()
    return p.resolve()


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


def left_pad(seq: Sequence[int], length: int) -> list[int]:
    """Keep the last ``length`` items of ``seq``, left-padded with 0."""
    seq = list(seq)[-length:] if length > 0 else []
    return [0] * (length - len(seq)) + seq


TrainExamples = Literal["windows", "last"]


def window_ends(length: int, max_len: int, stride: int) -> list[int]:
    """Where the training windows of one sequence end, most recent first.

    A window ending at ``e`` (exclusive) predicts ``seq[e - k]`` from ``seq[: e - k]`` for the targets
    ``seq[max(1, e - max_len) : e]`` and is credited only with the last ``stride`` of them (the earlier ones
    belong to the next window), so every target ``seq[1:]`` is trained on exactly once, with at least
    ``max_len - stride`` items of context unless it is within the first ``max_len`` of the sequence.

    Args:
        length: sequence length ``n`` (``n - 1`` targets).
        max_len: model input length.
        stride: targets credited per window, ``1..max_len``.

    Returns:
        ``[n, n - stride, n - 2 * stride, ...]`` down to the last end that still has a target (``> 1``).

    Example:
        >>> window_ends(12, 5, 5), window_ends(12, 5, 3), window_ends(1, 5, 5)
        ([12, 7, 2], [12, 9, 6, 3], [])
    """
    return list(range(length, 1, -stride))


class TrainSequences(Dataset):
    """Next-item training examples: windows of ``max_len`` items over each user's training sequence.

    ``examples="windows"`` (default) covers every target of every user: the sequence is cut from its end into
    windows of ``max_len`` targets (:func:`window_ends`) and each target is credited in exactly one window,
    which is what RecBole's one-example-per-prefix data gives at a fraction of the cost (one forward pass
    scores ``max_len`` targets). ``examples="last"`` keeps only the most recent ``max_len + 1`` items per
    user (one example per user), as the original SASRec does; on long histories it never trains on most
    targets (MovieLens-100k: 40% of them are ever seen) and gives few optimiser steps per epoch.

    Examples are ``(user, end)`` pairs over the given sequences (no copies), so memory grows with the
    number of windows only.

    Args:
        users: user index of each sequence.
        sequences: chronological item indices (``1..N``).
        max_len: model input length.
        examples: ``"windows"`` or ``"last"``.
        stride: targets credited per window (``None`` = ``max_len``: windows do not overlap). A smaller
            stride gives every target at least ``max_len - stride`` items of context, at
            ``max_len / stride`` times the cost.

    Example:
        >>> ds = TrainSequences([0], [[1, 2, 3, 4, 5, 6, 7]], max_len=3)
        >>> [(e["input_ids"], e["target_ids"]) for e in ds]
        [([4, 5, 6], [5, 6, 7]), ([1, 2, 3], [2, 3, 4])]
        >>> ds = TrainSequences([0], [[1, 2, 3, 4, 5, 6, 7]], max_len=3, stride=2)
        >>> [(e["input_ids"], e["target_ids"]) for e in ds]
        [([4, 5, 6], [0, 6, 7]), ([2, 3, 4], [0, 4, 5]), ([0, 1, 2], [0, 2, 3])]
    """

    def __init__(
        self,
        users: Sequence[int],
        sequences: Sequence[Sequence[int]],
        max_len: int,
        examples: TrainExamples = "windows",
        stride: int | None = None,
    ) -> None:
        if examples not in ("windows", "last"):
            raise ValueError(f"examples must be 'windows' or 'last', got {examples!r}.")
        stride = max_len if stride is None else int(stride)
        if not 1 <= stride <= max_len:
            raise ValueError(f"stride must be between 1 and max_len ({max_len}), got {stride}.")
        self.max_len = max_len
        self.stride = stride
        self.mode = examples
        self.users = list(users)
        self.sequences = sequences
        rows: list[tuple[int, int]] = []
        for k, seq in enumerate(sequences):
            ends = window_ends(len(seq), max_len, stride)
            rows.extend((k, e) for e in (ends[:1] if examples == "last" else ends))
        #: ``(sequence index, window end)`` per example
        self.index = np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` items per example (inputs + 1), for length-grouped batching."""
        return np.minimum(self.index[:, 1], self.max_len + 1)

    def num_targets(self) -> int:
        """How many targets the examples credit (every ``seq[1:]`` item with ``examples="windows"``)."""
        return int(sum(int((np.asarray(self[i]["target_ids"]) > 0).sum()) for i in range(len(self))))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        k, end = (int(v) for v in self.index[idx])
        seq = self.sequences[k]
        start = max(0, end - self.max_len - 1)
        window = list(seq[start:end])
        targets = window[1:]
        if self.mode == "windows":
            credited = min(self.stride, len(targets))
            targets = [0] * (len(targets) - credited) + targets[len(targets) - credited :]
        return {
            "user": self.users[k],
            "input_ids": left_pad(window[:-1], self.max_len),
            "target_ids": left_pad(targets, self.max_len),
        }


class EvalSequences(Dataset):
    """Ranking examples (history, targets, items to exclude) of one split."""

    def __init__(self, split: EvalSplit, max_len: int, mask_history: bool) -> None:
        self.split = split
        self.max_len = max_len
        self.mask_history = mask_history

    def __len__(self) -> int:
        return len(self.split)

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` history length of each example as fed to the model (at most ``max_len``)."""
        return np.minimum([len(h) for h in self.split.histories], self.max_len)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        targets = self.split.targets[idx]
        exclude = [i for i in self.split.exclude[idx] if i not in set(targets)] if self.mask_history else []
        return {
            "user": self.split.users[idx],
            "input_ids": left_pad(self.split.histories[idx], self.max_len),
            "targets": list(targets),
            "exclude": exclude,
        }


def trim_left_padding(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop leading columns that are padding in every row of the first tensor (and the same columns of
    the others). Sequences are left-padded, so real items keep their positions relative to the end and
    the model output is unchanged, while short-history batches cost far less (Beauty: ~7 of 50 slots real).
    """
    real = (tensors[0] != 0).any(dim=0)
    if not bool(real.any()):
        return tuple(t[:, -1:] for t in tensors)
    first = int(real.nonzero()[0])
    return tuple(t[:, first:] for t in tensors)


def collate_train(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack training examples into ``user (B,)``, ``input_ids (B, L)``, ``target_ids (B, L)``.

    ``L`` is the longest history in the batch (at most ``max_len``): all-padding columns are trimmed.
    """
    inputs, targets = trim_left_padding(
        torch.tensor([e["input_ids"] for e in examples], dtype=torch.long),
        torch.tensor([e["target_ids"] for e in examples], dtype=torch.long),
    )
    return {
        "user": torch.tensor([e["user"] for e in examples], dtype=torch.long),
        "input_ids": inputs,
        "target_ids": targets,
    }


def collate_eval(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ranking examples; targets padded with -1, exclusions as sparse (row, col) pairs."""
    width = max(1, max(len(e["targets"]) for e in examples))
    targets = torch.full((len(examples), width), -1, dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    for r, e in enumerate(examples):
        targets[r, : len(e["targets"])] = torch.tensor(e["targets"], dtype=torch.long)
        rows.extend([r] * len(e["exclude"]))
        cols.extend(e["exclude"])
    return {
        "user": torch.tensor([e["user"] for e in examples], dtype=torch.long),
        "input_ids": trim_left_padding(torch.tensor([e["input_ids"] for e in examples], dtype=torch.long))[0],
        "targets": targets,
        "exclude_rows": torch.tensor(rows, dtype=torch.long),
        "exclude_cols": torch.tensor(cols, dtype=torch.long),
    }


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


@DATAMODULES.register("data/sequential")
class SequentialDataModule(L.LightningDataModule):
    """Sequential next-item data from a canonical dataset, with optional frozen item features.

    Args:
        dataset: canonical dataset folder (``mmrec data prepare`` / ``mmrec data synth`` output).
        max_len: history length fed to the model (most recent items kept).
        batch_size: training batch size (windows per step).
        eval_batch_size: users per validation / test / predict step.
        split: ``"leave-one-out"`` by time, ``"given"`` (dataset's ``split`` column), ``"cold-items"`` (a
            seeded share of the items withheld from training; every validation / test target is one of them,
            see :func:`~mmrec.datamodules.splits.cold_item_split`), ``"temporal"`` (one global time cut, see
            :func:`~mmrec.datamodules.splits.temporal_split`) or ``"auto"`` (the protocol's split when
            ``protocol`` is set, else given when the dataset has a split column).
        stores: feature name -> embedding store path (a store folder, or a named folder from
            ``mmrec embed`` whose ``CURRENT`` file points at the latest store). Relative paths are looked
            up inside the dataset folder first, then against the current directory.
        mask_history: exclude the user's known items from the validation / test ranking (targets are never
            excluded). ``None`` (default): as ``protocol`` says, and not masked without a protocol (the
            literature's sequential protocol; see :mod:`mmrec.eval_protocol`).
        num_workers: DataLoader workers.
        seed: seeds the training shuffle.
        protocol: an evaluation protocol preset (``recbole``, ``given``, ``masked``, ``mmrec``, ``cold-items``,
            ``temporal``) fixing the split and the masking; ``split`` / ``mask_history`` given explicitly must
            agree with it.
        holdout_fraction: share held out by the ``cold-items`` (items) and ``temporal`` (interactions, latest
            first) splits; ``None`` = the preset's (0.2).
        split_seed: seed drawing the withheld items of ``cold-items`` (``None`` = 0). Independent of ``seed``,
            so every model seed of a table is evaluated on the same items.
        shuffle_train_targets: a negative control: permute the training targets across all users and
            positions (seeded by ``seed``), keeping every item's training frequency but no link between a
            history and what follows it. A model trained so must not beat MostPop (``mmrec bench quality``).
        train_examples: ``"windows"`` (every training target, in windows of ``max_len``; see
            :class:`TrainSequences`) or ``"last"`` (the last ``max_len + 1`` items per user only).
        window_stride: targets credited per window (``None`` = the stride the model asks for, see
            :class:`~mmrec.protocols.TrainingWindowPreference`, else ``max_len``: non-overlapping windows).
        pool_batches: batches per length-sorted pool of the training sampler (1 = plain shuffled batches).

    Example:
        >>> dm = SequentialDataModule("assets/demo", stores={"image": "cache/demo/image"})  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: str,
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        split: SplitName = "auto",
        stores: dict[str, str] | None = None,
        mask_history: bool | None = None,
        num_workers: int = 0,
        seed: int = 0,
        protocol: str | None = None,
        shuffle_train_targets: bool = False,
        train_examples: TrainExamples = "windows",
        window_stride: int | None = None,
        pool_batches: int = 50,
        holdout_fraction: float | None = None,
        split_seed: int | None = None,
    ) -> None:
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}.")
        if train_examples not in ("windows", "last"):
            raise ValueError(f"train_examples must be 'windows' or 'last', got {train_examples!r}.")
        if window_stride is not None and not 1 <= window_stride <= max_len:
            raise ValueError(f"window_stride must be between 1 and max_len ({max_len}), got {window_stride}.")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be >= 1 (1 = plain shuffled batches), got {pool_batches}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1.")
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}.")
        self.save_hyperparameters()
        self.dataset_path = resolve_user_path(dataset)
        self.meta = read_meta(self.dataset_path)
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_train_targets = shuffle_train_targets
        self.train_examples = train_examples
        self.window_stride = window_stride
        self.pool_batches = pool_batches
        has_split = "split" in self.meta.get("columns", {}).get("interactions", [])
        self._protocol = _resolve_protocol(
            protocol, split, mask_history, has_split, holdout_fraction=holdout_fraction, split_seed=split_seed
        )
        if self._protocol.split == "given" and not has_split:
            raise DatasetError(
                f"split: given (protocol {self._protocol.name}), but {self.dataset_path} has no 'split' column; "
                "use split: leave-one-out (protocol recbole or masked)."
            )
        self.split_protocol = self._protocol.split
        self.mask_history = self._protocol.mask_history
        self.feature_paths = {
            name: resolve_store_path(resolve_user_path(p, base=self.dataset_path))
            for name, p in (stores or {}).items()
        }
        self._feature_dims = {name: _store_dim(name, p) for name, p in self.feature_paths.items()}
        self.data: CanonicalDataset | None = None
        self.splits: SplitResult | None = None
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.sequences: list[list[int]] = []

    # ----------------------------------------------------------------- info available before setup
    @property
    def catalog(self) -> dict[str, Any]:
        """Sizes and feature dims (from ``dataset.json`` and store manifests; cheap, no data loaded)."""
        counts = self.meta["counts"]
        return Catalog(
            num_items=int(counts["items"]),
            num_users=int(counts["users"]),
            max_len=self.max_len,
            feature_dims=dict(self._feature_dims),
            dataset=str(self.meta.get("name", self.dataset_path.name)),
            fingerprint=str(self.meta.get("fingerprint", "")),
        ).as_dict()

    @property
    def protocol(self) -> EvalProtocol:
        """The evaluation protocol of the validation and test batches (split, masking, full ranking)."""
        return self._protocol

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to download: datasets are prepared by ``mmrec data prepare``; only check they exist."""
        read_meta(self.dataset_path)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.data = CanonicalDataset.load(self.dataset_path)
        self.item_ids = self.data.item_ids
        item_index = {iid: i + 1 for i, iid in enumerate(self.item_ids)}
        self.user_ids, self.sequences, codes = sequences_by_user(self.data.interactions, item_index)
        p = self._protocol
        if self.split_protocol == "given":
            assert codes is not None
            self.splits = given_split(self.sequences, codes)
        elif self.split_protocol == "cold-items":
            assert p.holdout_fraction is not None
            self.splits = cold_item_split(self.sequences, p.holdout_fraction, seed=int(p.split_seed or 0))
            log.info(
                "cold-item split: %d of %d items withheld from training (validation %d users, test %d users).",
                len(self.splits.withheld),
                len(self.item_ids),
                len(self.splits.valid),
                len(self.splits.test),
            )
        elif self.split_protocol == "temporal":
            assert p.holdout_fraction is not None
            times = timestamps_by_user(self.data.interactions)
            if self.meta.get("timestamps") in ("file-order", "sequence-order"):
                log.warning(
                    "split: temporal on %s, whose timestamps are %s, not real times: the cut is by position.",
                    self.dataset_path,
                    self.meta["timestamps"],
                )
            self.splits = temporal_split(self.sequences, times, p.holdout_fraction)
        else:
            self.splits = leave_one_out(self.sequences)
        if self.splits.not_evaluated:
            log.warning(
                "%d of %d users cannot be evaluated under %s (too few interactions or no held-out items): "
                "they are used for training only and are not part of the metrics.",
                self.splits.not_evaluated,
                len(self.user_ids),
                self.splits.protocol,
            )

    def _require_setup(self) -> SplitResult:
        if self.splits is None:
            self.setup()
        assert self.splits is not None
        return self.splits

    def effective_window_stride(self) -> int | None:
        """The training-window stride used: ``window_stride`` when set, else the stride the Trainer's model
        asks for (:class:`~mmrec.protocols.TrainingWindowPreference`, e.g. BERT4Rec's 1), else ``None``
        (non-overlapping windows of ``max_len``)."""
        if self.window_stride is not None:
            return self.window_stride
        model = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if isinstance(model, TrainingWindowPreference):
            return max(1, min(int(model.preferred_window_stride), self.max_len))
        return None

    def train_dataloader(self) -> DataLoader:
        s = self._require_setup()
        ds = TrainSequences(
            range(len(s.train)), s.train, self.max_len, self.train_examples, self.effective_window_stride()
        )
        return length_grouped_loader(
            ShuffledTargets(ds, seed=self.seed) if self.shuffle_train_targets else ds,
            batch_size=self.batch_size,
            seed=self.seed,
            collate_fn=collate_train,
            num_workers=self.num_workers,
            where=str(self.dataset_path),
            pool_batches=self.pool_batches,
        )

    def _eval_loader(
        self, split: EvalSplit, mask_history: bool | None = None, by_length: bool = True
    ) -> DataLoader:
        mask = self.mask_history if mask_history is None else mask_history
        return ranking_loader(
            EvalSequences(split, self.max_len, mask),
            batch_size=self.eval_batch_size,
            collate_fn=collate_eval,
            num_workers=self.num_workers,
            by_length=by_length,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require_setup().valid)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require_setup().test)

    def predict_dataloader(self) -> DataLoader:
        """Every user with their full history (all interactions), for next-item recommendations; the user's
        known items are excluded whatever the evaluation protocol (recommendations, not a measurement)."""
        self._require_setup()
        return self._eval_loader(EvalSplit.full_histories(self.sequences), mask_history=True, by_length=False)

    # ----------------------------------------------------------------- what models need
    def model_inputs(self) -> ModelInputs:
        """Lazy model inputs: ``features`` (frozen tables), ``train_interactions`` (CSR user x item counts of
        the training split) and ``train_sequences`` (see :class:`~mmrec.protocols.ModelInputs`)."""
        return ModelInputs(
            {
                "features": self.item_feature_tables,
                "train_interactions": self.train_interactions,
                "train_sequences": lambda: [list(s) for s in self._require_setup().train],
                "withheld_items": lambda: list(self._require_setup().withheld),
            }
        )

    def train_interactions(self) -> sp.csr_matrix:
        """``(U, N+1)`` CSR matrix of training-split interaction counts (column 0, padding, is empty)."""
        return interaction_matrix(self._require_setup().train, len(self.user_ids), len(self.item_ids))

    def query_batch(self, histories: Sequence[Sequence[int]], users: Sequence[int]) -> dict[str, torch.Tensor]:
        """A ranking batch for item ``histories`` (indices 1..N, oldest first) of ``users`` (-1 = unknown)."""
        return collate_eval(
            [
                {"user": int(u), "input_ids": left_pad(h, self.max_len), "targets": [], "exclude": []}
                for h, u in zip(histories, users)
            ]
        )

    def item_feature_tables(
        self, dtype: torch.dtype = torch.float32
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Frozen item features aligned to item indices.

        Returns:
            name -> ``(features (N+1, D), valid (N+1,))``; row 0 (padding) is zeros / False.
        """
        self._require_setup()
        tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, path in self.feature_paths.items():
            store = EmbeddingStore.open(path)
            vecs, mask = store.aligned(self.item_ids, dtype=dtype)
            missing = int((~mask).sum())
            if missing:
                log.warning(
                    "feature %r: %d of %d items have no valid vector (masked).", name, missing, len(mask)
                )
            pad_v = torch.zeros(1, vecs.shape[1], dtype=dtype)
            tables[name] = (torch.cat([pad_v, vecs]), torch.cat([torch.zeros(1, dtype=torch.bool), mask]))
        return tables


def _resolve_protocol(
    name: str | None,
    split: str,
    mask_history: bool | None,
    has_split: bool,
    *,
    holdout_fraction: float | None = None,
    split_seed: int | None = None,
) -> EvalProtocol:
    """The protocol from a preset name and / or explicit ``split``, ``mask_history``, ``holdout_fraction`` and
    ``split_seed`` (see the class)."""
    base = _resolve_base_protocol(name, split, mask_history, has_split)
    if holdout_fraction is None and split_seed is None:
        return base
    if base.split not in HOLDOUT_SPLITS:
        raise ValueError(
            f"holdout_fraction / split_seed only apply to the splits {HOLDOUT_SPLITS} (protocol: cold-items / "
            f"temporal), but the split is {base.split}; drop them or choose one of those splits."
        )
    return dataclasses.replace(
        base,
        holdout_fraction=base.holdout_fraction if holdout_fraction is None else float(holdout_fraction),
        split_seed=base.split_seed if split_seed is None else int(split_seed),
    )


def _resolve_base_protocol(
    name: str | None, split: str, mask_history: bool | None, has_split: bool
) -> EvalProtocol:
    if name is not None:
        base = preset(name)
        if split not in ("auto", base.split):
            raise ValueError(
                f"protocol {name!r} evaluates on the {base.split} split, but split: {split} was given; "
                "drop one of them."
            )
        if mask_history is not None and mask_history != base.mask_history:
            raise ValueError(
                f"protocol {name!r} has mask_history: {str(base.mask_history).lower()}, but mask_history: "
                f"{str(mask_history).lower()} was given; drop one of them (or use the preset that masks as you "
                "want: masked / mmrec mask history, recbole / given do not)."
            )
        return base
    if split in HOLDOUT_SPLITS:
        return dataclasses.replace(preset(split), mask_history=bool(mask_history))
    resolved = "given" if (split == "given" or (split == "auto" and has_split)) else "leave-one-out"
    return EvalProtocol(split=resolved, mask_history=bool(mask_history))  # type: ignore[arg-type]


def _store_dim(name: str, path: Path) -> int:
    try:
        return int(EmbeddingStore.read_manifest(path)["dim"])
    except StoreError as e:
        raise StoreError(f"feature {name!r}: {e}") from e
