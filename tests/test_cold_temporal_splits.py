"""Item cold-start and global temporal splits: splits, DataModule, protocols, cold metrics (issue 11 item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_dataset

from mmrec.datamodules.sequential import SequentialDataModule, timestamps_by_user
from mmrec.datamodules.splits import cold_item_split, temporal_cuts, temporal_split
from mmrec.eval_protocol import PRESETS, EvalProtocol, preset
from mmrec.metrics import item_groups


def _random_sequences(num_users: int = 80, num_items: int = 50, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, size=int(rng.integers(2, 12))).tolist() for _ in range(num_users)]


def test_cold_item_split_withholds_items_everywhere_but_the_targets() -> None:
    seqs = _random_sequences()
    s = cold_item_split(seqs, fraction=0.2, seed=3)
    withheld = set(s.withheld)
    occurring = {i for q in seqs for i in q}
    assert len(withheld) == round(0.2 * len(occurring))
    assert not withheld & {i for q in s.train for i in q}
    for split in (s.valid, s.test):
        assert len(split) > 0
        assert all(t[0] in withheld for t in split.targets)
        assert not withheld & {i for h in split.histories for i in h}
    # validation and test draw from disjoint halves of the withheld items
    assert not {t[0] for t in s.valid.targets} & {t[0] for t in s.test.targets}
    # every warm interaction is kept in training, in order
    for q, tr in zip(seqs, s.train):
        assert tr == [i for i in q if i not in withheld]
    # seeded: same seed same items, another seed other items
    assert cold_item_split(seqs, 0.2, seed=3).withheld == s.withheld
    assert cold_item_split(seqs, 0.2, seed=4).withheld != s.withheld


def test_cold_item_split_history_is_what_came_before_the_target() -> None:
    s = cold_item_split([[5, 6, 1, 7, 2, 8]], fraction=0.5, seed=0)
    withheld = set(s.withheld)
    seq = [5, 6, 1, 7, 2, 8]
    for split in (s.valid, s.test):
        for h, t in zip(split.histories, split.targets):
            pos = max(k for k, i in enumerate(seq) if i == t[0])
            assert h == [i for i in seq[:pos] if i not in withheld]


def test_cold_item_split_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="raise holdout_fraction"):
        cold_item_split([[1, 2], [2, 3]], fraction=0.1)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        cold_item_split([[1, 2]], fraction=1.5)


def test_temporal_split_respects_one_global_cut() -> None:
    rng = np.random.default_rng(1)
    seqs, times = [], []
    for _ in range(40):
        n = int(rng.integers(1, 10))
        times.append(np.sort(rng.integers(0, 1000, size=n)).tolist())
        seqs.append(rng.integers(1, 30, size=n).tolist())
    s = temporal_split(seqs, times, fraction=0.3)
    v0, t0 = temporal_cuts(times, 0.3)
    assert v0 <= t0
    for u, (q, ts) in enumerate(zip(seqs, times)):
        assert s.train[u] == [i for i, t in zip(q, ts) if t < v0]
    by_user_valid = dict(zip(s.valid.users, zip(s.valid.histories, s.valid.targets)))
    by_user_test = dict(zip(s.test.users, zip(s.test.histories, s.test.targets)))
    assert by_user_valid and by_user_test
    for u, (h, t) in by_user_valid.items():
        k = len(h)
        assert h == s.train[u] and v0 <= times[u][k] < t0 and t == [seqs[u][k]]
    for u, (h, t) in by_user_test.items():
        k = len(h)
        assert h == seqs[u][:k] and times[u][k] >= t0 and all(tt < t0 for tt in times[u][:k])
        assert t == [seqs[u][k]]
    # about 30% of the interactions are at or after the first cut
    all_t = np.concatenate([np.asarray(t) for t in times])
    assert abs(float((all_t >= v0).mean()) - 0.3) < 0.05


def test_temporal_split_rejects_unsorted_times() -> None:
    with pytest.raises(ValueError, match="not in time order"):
        temporal_split([[1, 2, 3]], [[5, 1, 9]], fraction=0.5)


def test_presets_and_protocol_fields() -> None:
    assert preset("cold-items").split == "cold-items" and preset("cold-items").holdout_fraction == 0.2
    assert preset("temporal").split_seed is None
    assert EvalProtocol(split="cold-items", holdout_fraction=0.3, split_seed=7).name == "cold-items"
    assert EvalProtocol(split="cold-items", holdout_fraction=0.3).split_seed == 0
    for name, p in PRESETS.items():
        assert p.name == name and EvalProtocol.from_dict(p.as_dict()) == p
    with pytest.raises(ValueError, match="needs holdout_fraction"):
        EvalProtocol(split="temporal")
    with pytest.raises(ValueError, match="only meaningful for splits"):
        EvalProtocol(split="leave-one-out", holdout_fraction=0.2)


def test_datamodule_cold_items_no_withheld_item_in_any_training_batch(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=40, num_users=80, min_len=4, max_len=12)
    dm = SequentialDataModule(
        str(ds.path), max_len=6, batch_size=8, protocol="cold-items", holdout_fraction=0.25, split_seed=1
    )
    dm.setup("fit")
    assert dm.protocol.name == "cold-items" and dm.protocol.holdout_fraction == 0.25
    withheld = set(dm.model_inputs()["withheld_items"])
    assert len(withheld) == 10
    for batch in dm.train_dataloader():
        seen = set(batch["input_ids"].flatten().tolist()) | set(batch["target_ids"].flatten().tolist())
        assert not seen & withheld
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        n = 0
        for batch in loader:
            targets = batch["targets"][batch["targets"] >= 0].tolist()
            n += len(targets)
            assert set(targets) <= withheld
            assert not set(batch["input_ids"].flatten().tolist()) & withheld
        assert n > 0
    # cold-split items are cold in the metrics: zero training interactions
    pop = torch.as_tensor(np.asarray(dm.train_interactions().sum(axis=0)).ravel())
    assert all(pop[i] == 0 for i in withheld)
    groups = item_groups(pop, 0.2, 0, ignore_columns=(0,))
    assert all(bool(groups["cold"][i]) and bool(groups["tail"][i]) for i in withheld)


def test_datamodule_temporal_cut_respected(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=30, num_users=50, min_len=3, max_len=10)
    dm = SequentialDataModule(str(ds.path), max_len=5, batch_size=8, split="temporal", holdout_fraction=0.3)
    dm.setup("fit")
    assert dm.protocol.name == "temporal"
    assert dm.data is not None
    times = timestamps_by_user(dm.data.interactions)
    v0, t0 = temporal_cuts(times, 0.3)
    assert dm.splits is not None
    for u, tr in enumerate(dm.splits.train):
        assert len(tr) == sum(t < v0 for t in times[u])
    for u, h in zip(dm.splits.test.users, dm.splits.test.histories):
        assert times[u][len(h)] >= t0


def test_datamodule_rejects_holdout_on_other_splits(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path)
    with pytest.raises(ValueError, match="only apply to the splits"):
        SequentialDataModule(str(ds.path), protocol="recbole", holdout_fraction=0.2)


def test_withheld_items_are_out_of_the_training_softmax() -> None:
    from mmrec.nn.losses import NextItemLoss

    g = torch.Generator().manual_seed(0)
    hidden, items = torch.randn(1, 2, 4, generator=g), torch.randn(6, 4, generator=g)
    targets = torch.tensor([[1, 2]])
    loss = NextItemLoss("ce", num_items=5)
    loss.exclude_items([4, 5])
    base = float(loss(hidden, items, targets))
    moved = items.clone()
    moved[4:] *= 100.0  # an absent item's score cannot change the loss
    assert float(loss(hidden, moved, targets)) == pytest.approx(base)
    plain = NextItemLoss("ce", num_items=5)
    assert float(plain(hidden, moved, targets)) != pytest.approx(base)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_withheld_items_are_never_sampled_negatives(sampling: str) -> None:
    from mmrec.nn.losses import NextItemLoss

    torch.manual_seed(0)
    loss = NextItemLoss("sampled", num_items=40, num_negatives=30, negative_sampling=sampling)
    if sampling == "popularity":
        # withheld items have no training interaction; before the fix they counted 1 and were drawn
        loss.attach_popularity([0] + [5] * 38 + [0, 0])
    loss.exclude_items([39, 40])
    draws = [loss.shared_negatives(torch.device("cpu")) for _ in range(200)]
    negatives = torch.cat([n for n, _ in draws])
    assert negatives.shape == (6000,) and not bool(torch.isin(negatives, torch.tensor([0, 39, 40])).any())
    assert set(negatives.tolist()) == set(range(1, 39))  # every existing item can still be drawn
    assert (draws[0][1] is None) == (sampling == "uniform")
    # a catalogue smaller than num_negatives: every existing item once, the withheld ones left out
    small = NextItemLoss("sampled", num_items=10, num_negatives=64)
    small.exclude_items([9, 10])
    assert small.shared_negatives(torch.device("cpu"))[0].tolist() == list(range(1, 9))
