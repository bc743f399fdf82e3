"""Splits and the sequential DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import toy_dataset, toy_store

from mmrec.data.canonical import DatasetError, write_dataset
from mmrec.datamodules.sequential import (
    LengthGroupedSampler,
    SequentialDataModule,
    TrainSequences,
    collate_eval,
    left_pad,
    trim_left_padding,
    window_ends,
)
from mmrec.datamodules.splits import given_split, leave_one_out
from mmrec.store import StoreError


def test_leave_one_out_split_by_time() -> None:
    s = leave_one_out([[1, 2, 3, 4, 5], [6, 7, 8], [9, 10], [11]])
    assert s.train == [[1, 2, 3], [6], [9, 10], [11]]
    assert s.valid.users == [0, 1] and s.valid.targets == [[4], [7]]
    assert s.valid.histories == [[1, 2, 3], [6]]
    assert s.test.targets == [[5], [8]] and s.test.histories == [[1, 2, 3, 4], [6, 7]]
    assert s.not_evaluated == 2  # users with fewer than 3 interactions are counted, not hidden


def test_given_split_multi_target_and_history() -> None:
    s = given_split([[1, 2, 3, 4, 5]], [[0, 0, 1, 2, 2]])
    assert s.train == [[1, 2]]
    assert s.valid.targets == [[3]] and s.valid.exclude == [[1, 2]]
    assert s.test.targets == [[4, 5]] and s.test.histories == [[1, 2, 3]] and s.test.exclude == [[1, 2, 3]]


def test_left_pad_keeps_most_recent() -> None:
    assert left_pad([1, 2, 3], 5) == [0, 0, 1, 2, 3]
    assert left_pad([1, 2, 3, 4], 2) == [3, 4]


def test_datamodule_batches_shapes_and_alignment(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=30, num_users=20, min_len=3, max_len=8)
    dm = SequentialDataModule(
        str(ds.path), max_len=6, batch_size=4, eval_batch_size=5, seed=1, protocol="masked"
    )
    assert dm.catalog["num_items"] == 30 and dm.catalog["num_users"] == 20 and dm.catalog["max_len"] == 6
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 6
    assert batch["target_ids"].shape == batch["input_ids"].shape
    assert (batch["input_ids"][:, 0] != 0).any()  # all-padding leading columns are trimmed
    # target at position t is the input at position t+1 (next item), padding aligned on the left
    inp, tgt = batch["input_ids"], batch["target_ids"]
    assert torch.equal(inp[:, 1:][tgt[:, :-1] > 0], tgt[:, :-1][tgt[:, :-1] > 0])
    assert (inp[:, :1][tgt[:, :1] == 0] == 0).all()

    val = next(iter(dm.val_dataloader()))
    assert val["targets"].shape == (5, 1)
    inputs = val["input_ids"]
    # each validation target is the second-to-last item of that user's sequence
    for row, u in enumerate(val["user"].tolist()):
        seq = dm.sequences[u]
        assert val["targets"][row, 0].item() == seq[-2]
        assert inputs[row, -1].item() == seq[-3]
        real = inputs[row][inputs[row] != 0].tolist()
        assert real == seq[:-2][-inputs.shape[1] :]
        excluded = set(val["exclude_cols"][val["exclude_rows"] == row].tolist())
        assert excluded == set(seq[:-2]) - {seq[-2]}

    # item index k+1 <-> k-th row of items.parquet
    assert dm.item_ids[0] == ds.items["item_id"].iloc[0]


def test_trim_left_padding_keeps_positions_from_the_end() -> None:
    a = torch.tensor([[0, 0, 0, 1, 2], [0, 0, 3, 4, 5]])
    b = a * 10
    ta, tb = trim_left_padding(a, b)
    assert ta.tolist() == [[0, 1, 2], [3, 4, 5]] and torch.equal(tb, ta * 10)
    assert trim_left_padding(torch.zeros(2, 4, dtype=torch.long))[0].shape == (2, 1)


def test_length_grouped_sampler_is_a_seeded_permutation_with_homogeneous_batches() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=1000)
    s = LengthGroupedSampler(lengths, batch_size=10, seed=5, pool_batches=20)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(1000)) and first != second  # every example once; new order per epoch
    assert list(LengthGroupedSampler(lengths, batch_size=10, seed=5, pool_batches=20)) == first
    spread = [np.ptp(lengths[first[i : i + 10]]) for i in range(0, 1000, 10)]
    random_spread = [np.ptp(lengths[i : i + 10]) for i in range(0, 1000, 10)]
    assert np.mean(spread) < 0.25 * np.mean(random_spread)


def test_datamodule_shuffle_is_seeded(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path)
    a = SequentialDataModule(str(ds.path), max_len=5, batch_size=8, seed=3)
    b = SequentialDataModule(str(ds.path), max_len=5, batch_size=8, seed=3)
    c = SequentialDataModule(str(ds.path), max_len=5, batch_size=8, seed=4)
    first = [next(iter(m.train_dataloader()))["user"] for m in (a, b, c)]
    assert torch.equal(first[0], first[1])
    assert not torch.equal(first[0], first[2])


def test_history_masking_switch_and_target_never_masked() -> None:
    examples = [{"user": 0, "input_ids": [0, 1, 2], "targets": [2], "exclude": [1]}]
    b = collate_eval(examples)
    assert b["exclude_cols"].tolist() == [1] and b["targets"].tolist() == [[2]]


def test_mask_history_false_excludes_nothing(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, min_len=4)
    dm = SequentialDataModule(str(ds.path), max_len=5, mask_history=False)
    batch = next(iter(dm.test_dataloader()))
    assert batch["exclude_rows"].numel() == 0


def test_feature_tables_aligned_with_padding_row(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=12)
    ids = ds.item_ids
    store = toy_store(tmp_path, ids[::-1][:-2], dim=4)  # reversed order, two items missing
    dm = SequentialDataModule(str(ds.path), stores={"img": str(store.path)})
    assert dm.catalog["feature_dims"] == {"img": 4}
    feats, valid = dm.item_feature_tables()["img"]
    assert feats.shape == (13, 4) and valid.shape == (13,)
    assert not valid[0] and torch.all(feats[0] == 0)
    k = ids.index(store.item_ids[0]) + 1
    assert torch.allclose(feats[k], torch.from_numpy(np.array(store.vectors[0], dtype=np.float32)))
    assert valid.sum().item() == 10 and not valid[1] and not valid[2]  # ids[0], ids[1] absent from the store


def test_given_split_from_dataset_column(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"]})
    inter = pd.DataFrame(
        {
            "user_id": ["u"] * 4,
            "item_id": ["a", "b", "c", "d"],
            "timestamp": [0, 1, 2, 3],
            "split": [0, 0, 1, 2],
        }
    )
    ds = write_dataset(tmp_path / "g", items, inter, name="g", source_format="python")
    dm = SequentialDataModule(str(ds.path), max_len=4)
    assert dm.split_protocol == "given"
    batch = next(iter(dm.test_dataloader()))
    assert batch["targets"].tolist() == [[4]] and batch["input_ids"].tolist() == [[1, 2, 3]]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="mmrec data prepare"):
        SequentialDataModule(str(tmp_path / "nope"))
    ds = toy_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no 'split' column"):
        SequentialDataModule(str(ds.path), split="given")
    with pytest.raises(StoreError, match="mmrec embed"):
        SequentialDataModule(str(ds.path), stores={"x": str(tmp_path / "missing-store")})
    with pytest.raises(ValueError, match="max_len"):
        SequentialDataModule(str(ds.path), max_len=0)


@pytest.mark.parametrize("max_len,stride", [(5, None), (5, 2), (5, 1), (3, 3), (50, 7)])
def test_windows_train_every_target_exactly_once_with_its_true_context(
    max_len: int, stride: int | None
) -> None:
    rng = np.random.default_rng(0)
    # distinct items within a sequence, so an item's position in its sequence is unambiguous
    seqs = [(rng.permutation(1000)[:n] + 1).tolist() for n in (0, 1, 2, 3, 5, 6, 11, 12, 23, 130)]
    ds = TrainSequences(range(len(seqs)), seqs, max_len=max_len, stride=stride)
    min_context = max_len - (stride or max_len) + 1
    credited: dict[int, list[int]] = {u: [] for u in range(len(seqs))}
    for e in ds:
        inp, tgt = e["input_ids"], e["target_ids"]
        assert len(inp) == len(tgt) == max_len
        seq = seqs[e["user"]]
        for t in np.nonzero(tgt)[0].tolist():
            j = seq.index(tgt[t])
            context = [i for i in inp[: t + 1] if i]
            assert context == seq[j - len(context) : j]  # the target's immediate predecessors, in order
            assert len(context) >= min(j, min_context)  # as much history as the window allows
            credited[e["user"]].append(tgt[t])
    for u, seq in enumerate(seqs):
        assert sorted(credited[u]) == sorted(seq[1:])  # every target once, none twice, nothing else
    assert len(ds) == sum(len(window_ends(len(s), max_len, stride or max_len)) for s in seqs)
    assert ds.lengths().max() <= max_len + 1


def test_last_window_mode_keeps_one_example_per_user() -> None:
    seqs = [list(range(1, 13)), [1, 2], [3]]
    ds = TrainSequences([7, 8, 9], seqs, max_len=5, examples="last")
    assert len(ds) == 2 and [e["user"] for e in ds] == [7, 8]
    assert ds[0] == {"user": 7, "input_ids": [7, 8, 9, 10, 11], "target_ids": [8, 9, 10, 11, 12]}
    assert ds[1]["target_ids"] == [0, 0, 0, 0, 2]
    with pytest.raises(ValueError, match="stride must be between 1 and max_len"):
        TrainSequences([0], seqs[:1], max_len=5, stride=6)
    with pytest.raises(ValueError, match="'windows' or 'last'"):
        TrainSequences([0], seqs[:1], max_len=5, examples="all")  # type: ignore[arg-type]
