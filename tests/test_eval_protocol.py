"""The evaluation protocol: presets, names, and what the sequential DataModule does with them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import toy_dataset

from mmrec.data.canonical import DatasetError, write_dataset
from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.eval_protocol import PRESETS, EvalProtocol, preset, protocol_of


def test_presets_and_derived_names() -> None:
    assert preset("recbole") == EvalProtocol(split="leave-one-out", mask_history=False, ranking="full")
    assert preset("mmrec") == EvalProtocol(split="given", mask_history=True)
    # the name is derived from the fields, so a result can never carry a wrong preset name
    assert EvalProtocol(split="given", mask_history=False).name == "given"
    assert EvalProtocol(split="leave-one-out", mask_history=True).name == "masked"
    sampled = EvalProtocol(split="leave-one-out", ranking="sampled", num_candidates=100)
    assert sampled.name == "custom"
    assert (
        sampled.describe()
        == "custom (leave-one-out by time, sampled ranking (100 candidates), history not masked)"
    )
    assert preset("masked").describe() == "masked (leave-one-out by time, full ranking, history masked)"
    for name, p in PRESETS.items():
        assert p.name == name and EvalProtocol.from_dict(p.as_dict()) == p
    assert preset("recbole").as_dict() == {
        "name": "recbole",
        "split": "leave-one-out",
        "mask_history": False,
        "ranking": "full",
        "num_candidates": None,
        "holdout_fraction": None,
        "split_seed": None,
    }


def test_protocol_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="presets: recbole, given, masked, mmrec, cold-items, temporal"):
        preset("RecBole-masked")
    with pytest.raises(ValueError, match="num_candidates >= 2"):
        EvalProtocol(ranking="sampled")
    with pytest.raises(ValueError, match="only meaningful for ranking: sampled"):
        EvalProtocol(num_candidates=100)
    with pytest.raises(ValueError, match="split must be one of"):
        EvalProtocol(split="random")  # type: ignore[arg-type]


def _given_dataset(root: Path) -> Path:
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e"]})
    inter = pd.DataFrame(
        {
            "user_id": ["u"] * 5 + ["v"] * 3,
            "item_id": ["a", "b", "c", "d", "e", "b", "c", "a"],
            "timestamp": [0, 1, 2, 3, 4, 0, 1, 2],
            "split": [0, 0, 0, 1, 2, 0, 1, 2],
        }
    )
    return write_dataset(root / "g", items, inter, name="g", source_format="python").path


def test_sequential_default_is_the_literature_protocol_unmasked(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, min_len=4)
    dm = SequentialDataModule(str(ds.path), max_len=5)
    assert dm.protocol == preset("recbole") and protocol_of(dm) == preset("recbole")
    test = next(iter(dm.test_dataloader()))
    assert test["exclude_rows"].numel() == 0  # history not masked by default
    # predict excludes the user's known items whatever the protocol (recommendations, not a measurement)
    pred = next(iter(dm.predict_dataloader()))
    assert pred["exclude_rows"].numel() > 0
    row0 = set(pred["exclude_cols"][pred["exclude_rows"] == 0].tolist())
    assert row0 == set(dm.sequences[int(pred["user"][0])])


def test_sequential_masking_from_preset_or_argument(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, min_len=4)
    for dm in (
        SequentialDataModule(str(ds.path), max_len=5, protocol="masked"),
        SequentialDataModule(str(ds.path), max_len=5, mask_history=True),  # the old argument still works
    ):
        assert dm.protocol.name == "masked" and dm.mask_history
        batch = next(iter(dm.test_dataloader()))
        u = int(batch["user"][0])
        excluded = set(batch["exclude_cols"][batch["exclude_rows"] == 0].tolist())
        assert excluded == set(dm.sequences[u][:-1]) - {dm.sequences[u][-1]}


def test_given_split_defaults_and_mmrec_preset(tmp_path: Path) -> None:
    path = _given_dataset(tmp_path)
    assert SequentialDataModule(str(path)).protocol.name == "given"
    dm = SequentialDataModule(str(path), protocol="mmrec")
    assert dm.protocol == preset("mmrec") and dm.split_protocol == "given"
    batch = next(iter(dm.test_dataloader()))
    row_u = batch["user"].tolist().index(0)
    # user u: train a b c, valid d, test e -> a b c d are masked when ranking e
    assert set(batch["exclude_cols"][batch["exclude_rows"] == row_u].tolist()) == {1, 2, 3, 4}
    assert batch["targets"][row_u].tolist() == [5]


def test_protocol_conflicts_are_errors(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path)
    with pytest.raises(ValueError, match="drop one of them"):
        SequentialDataModule(str(ds.path), protocol="recbole", mask_history=True)
    with pytest.raises(ValueError, match="evaluates on the given split"):
        SequentialDataModule(str(ds.path), protocol="mmrec", split="leave-one-out")
    with pytest.raises(DatasetError, match="no 'split' column"):
        SequentialDataModule(str(ds.path), protocol="mmrec")
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        SequentialDataModule(str(ds.path), protocol="nope")
    # explicit arguments that agree with the preset are fine
    assert SequentialDataModule(str(ds.path), protocol="masked", mask_history=True).protocol.name == "masked"


def test_protocol_of_without_declaration() -> None:
    assert protocol_of(object()) is None and protocol_of(None) is None
