"""VIP5DataModule: mixed-task batches, saved direct-task candidates, explanation split by pair, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_vip5_support import tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.vip5 import VIP5DataModule
from mmrec.datamodules.vip5_tasks import TASK_INDEX, EpochSampler, explanation_text
from mmrec.store import StoreError


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vip5data")
    ds = toy_reviews_dataset(root)
    store = toy_feature_store(root, ds.item_ids)
    return {"root": root, "dataset": ds.path, "store": store.path, "t5": tiny_t5_dir(root)}


def _dm(env: dict[str, Path], **kw) -> VIP5DataModule:
    args = dict(
        dataset=str(env["dataset"]),
        tokenizer=str(env["t5"]),
        stores={"image": str(env["store"])},
        negatives=9,
        batch_size=16,
        eval_batch_size=4,
        max_source_length=200,
        derived_dir=str(env["root"] / "derived"),
    )
    args.update(kw)
    return VIP5DataModule(**args)


def test_catalog_and_mixed_task_batches(env: dict[str, Path]) -> None:
    dm = _dm(env)
    cat = dm.catalog
    assert cat["num_items"] == 30 and cat["num_users"] == 24 and cat["feature_dims"] == {"image": 6}
    assert cat["visual_tokens"] == 2 and cat["tasks"] == ["sequential", "direct", "explanation"]
    assert {"tokenizer_fingerprint", "placeholder_token_id", "eos_token_id", "answer_token_ids"} <= set(cat)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    batch = batches[0]
    b, length = batch["input_ids"].shape
    for key in ("attention_mask", "whole_word_ids", "feature_items", "feature_slots"):
        assert batch[key].shape == (b, length)
    assert batch["labels"].shape[0] == b and (batch["labels"] == -100).any()
    assert set(batch["task_ids"].tolist()) == {0, 1, 2}  # tasks mixed within a batch, per sample
    assert not batch["unseen"].any()  # training uses seen templates only
    seen_ids = {t.index for t in dm.template_set.templates if t.split == "seen"}
    assert set(torch.cat([x["template_ids"] for x in batches]).tolist()) <= seen_ids
    # placeholders point at real items; padding rows carry no item
    assert batch["feature_items"][batch["attention_mask"] == 0].eq(0).all()
    assert batch["feature_items"].max() <= 30
    total = sum(x["input_ids"].shape[0] for x in batches)
    assert total == len(dm.train_plan())


def test_epochs_resample_but_repeat_exactly(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["sequential"])
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, EpochSampler)
    first = [loader.dataset[i] for i in list(iter(sampler))[:5]]
    sampler.set_epoch(0)
    again = [loader.dataset[i] for i in list(iter(sampler))[:5]]
    assert [e["labels"] for e in first] == [e["labels"] for e in again]
    sampler.set_epoch(1)
    other = [loader.dataset[(1, i)] for i in range(len(loader.dataset))]
    base = [loader.dataset[(0, i)] for i in range(len(loader.dataset))]
    assert [e["labels"] for e in other] != [e["labels"] for e in base]


def test_direct_candidates_saved_once_and_valid(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["direct"], derived_dir=str(env["root"] / "derived_direct"))
    sets = dm.eval_sets("test")
    assert {s.name for s in sets} == {
        "direct/seen/yes_no",
        "direct/seen/choose",
        "direct/unseen/yes_no",
        "direct/unseen/choose",
    }
    files = list((env["root"] / "derived_direct").glob("vip5_direct_candidates-*-seed0-n9.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    with np.load(files[0]) as z:
        cands, users = z["test_candidates"], z["test_users"]
    assert cands.shape == (24, 10)
    for u, row in zip(users.tolist(), cands.tolist()):
        seq = dm.sequences[u]
        assert row[0] == seq[-1]  # the positive (test item) first
        assert len(set(row)) == 10 and not set(row[1:]) & set(seq)  # negatives: distinct, never interacted
    # a second datamodule (another run / model) reuses the same file
    dm2 = _dm(env, tasks=["direct"], derived_dir=str(env["root"] / "derived_direct"))
    sets2 = dm2.eval_sets("test")
    assert files[0].stat().st_mtime_ns == mtime
    batch = next(iter(dm2.test_dataloader()[0]))
    assert sets2[0].kind == "yes_no" and batch["candidates"].shape[1] == 10
    assert batch["input_ids"].shape[0] == batch["candidates"].numel()  # one prompt per candidate
    pos_items = batch["candidates"][torch.arange(len(batch["positive"])), batch["positive"]]
    assert pos_items.tolist() == batch["target_item"].tolist()


def test_explanation_pairs_never_leak_into_training(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["explanation"])
    dm.setup("fit")
    ex = dm.task_data.explanation
    pairs = {
        code: set(zip(ex.users[ex.indices(code)].tolist(), ex.items[ex.indices(code)].tolist()))
        for code in (0, 1, 2)
    }
    assert pairs[0] and pairs[2] and not pairs[0] & pairs[2] and not pairs[0] & pairs[1]
    train_set = dm.train_dataloader().dataset
    drawn = set()
    for epoch in range(3):  # each epoch draws one training pair per user with reviews
        for i in range(len(train_set)):
            e = train_set[(epoch, i)]
            drawn.add((e["user"], next(it for it in e["src"].feature_items if it)))
    assert drawn <= pairs[0] and len(drawn) > len(train_set)
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["task"] == "explanation" and len(batch["references"]) == batch["input_ids"].shape[0]
    assert batch["task_ids"].eq(TASK_INDEX["explanation"]).all()


def test_eval_batches_for_ranking(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["sequential"], val_max_users=5)
    val = dm.val_dataloader()
    assert [loader.dataset.name for loader in val] == ["sequential/seen"] and len(val[0].dataset) == 5
    test = dm.test_dataloader()
    assert [loader.dataset.name for loader in test] == ["sequential/seen", "sequential/unseen"]
    batch = next(iter(test[1]))
    assert batch["split"] == "unseen" and batch["unseen"].all()
    assert batch["targets"].shape == (batch["input_ids"].shape[0], 1)
    # history items are excluded, the target never
    t = batch["targets"][:, 0]
    assert not (batch["exclude_cols"] == t[batch["exclude_rows"]]).any()
    pred = next(iter(dm.predict_dataloader()))
    assert pred["targets"].eq(-1).all()


def test_missing_data_names_the_commands(env: dict[str, Path], tmp_path: Path) -> None:
    cmds = [
        "mmrec data prepare sequence/s3rec X.txt --out data/x",
        "mmrec embed --config configs/embed/x.yaml",
    ]
    with pytest.raises(DatasetError) as e:
        _dm(env, dataset=str(tmp_path / "nothing"), prepare_commands=cmds)
    assert all(c in str(e.value) for c in cmds)
    with pytest.raises(StoreError) as e2:
        _dm(env, stores={"image": str(tmp_path / "no_store")}, prepare_commands=cmds)
    assert cmds[1] in str(e2.value)
    with pytest.raises(ValueError, match="tasks"):
        _dm(env, tasks=["rating"])


def test_explanation_text() -> None:
    assert explanation_text("Ok. Fits well and looks great! Bye") == "Fits well and looks great!"
    assert explanation_text("short", mode="full") == "short"
