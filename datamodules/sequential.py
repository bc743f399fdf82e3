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

The pieces live in modules of their own, their names re-exported here: reading interactions into
sequences (:mod:`mmrec.datamodules.histories`), examples and collate functions
(:mod:`mmrec.datamodules.sequence_batches`), loaders (:mod:`mmrec.datamodules.sequence_loaders`), protocol
resolution (:mod:`mmrec.datamodules.split_protocol`) and user paths (:mod:`mmrec.datamodules.paths`).

Example:
    >>> dm = SequentialDataModule("assets/demo", max_len=20)  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from mmrec.catalog import Catalog
from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.datamodules.controls import ShuffledTargets
from mmrec.datamodules.histories import interaction_matrix, sequences_by_user, timestamps_by_user
from mmrec.datamodules.paths import resolve_user_path
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.sampling import EvalShardSampler, LengthGroupedSampler
from mmrec.datamodules.sequence_batches import (
    EvalSequences,
    TrainExamples,
    TrainSequences,
    collate_eval,
    collate_train,
    left_pad,
    trim_left_padding,
    window_ends,
)
from mmrec.datamodules.sequence_loaders import length_grouped_loader, ranking_loader
from mmrec.datamodules.split_protocol import SPLIT_NAMES, SplitName, resolve_protocol
from mmrec.datamodules.splits import (
    EvalSplit,
    SplitResult,
    cold_item_split,
    given_split,
    leave_one_out,
    temporal_split,
)
from mmrec.eval_protocol import EvalProtocol
from mmrec.protocols import ModelInputs, TrainingWindowPreference
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

# the pieces below live in modules of their own; their names stay importable from here
__all__ = [
    "SPLIT_NAMES",
    "EvalSequences",
    "EvalShardSampler",
    "LengthGroupedSampler",
    "SequentialDataModule",
    "SplitName",
    "TrainExamples",
    "TrainSequences",
    "collate_eval",
    "collate_train",
    "interaction_matrix",
    "left_pad",
    "length_grouped_loader",
    "ranking_loader",
    "resolve_user_path",
    "sequences_by_user",
    "timestamps_by_user",
    "trim_left_padding",
    "window_ends",
]

log = logging.getLogger(__name__)


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
        self._protocol = resolve_protocol(
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

    def query_batch(
        self, histories: Sequence[Sequence[int]], users: Sequence[int]
    ) -> dict[str, torch.Tensor]:
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


def _store_dim(name: str, path: Path) -> int:
    try:
        return int(EmbeddingStore.read_manifest(path)["dim"])
    except StoreError as e:
        raise StoreError(f"feature {name!r}: {e}") from e
