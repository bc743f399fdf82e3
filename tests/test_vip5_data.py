"""VIP5DataModule: mixed-task batches, saved direct-task candidates, negatives that avoid every positive,
explanation pairs split by time as leave-one-out, grouped configs, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_vip5_support import tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.data.canonical import DatasetError, write_dataset
from mmrec.datamodules.vip5 import VIP5DataModule
from mmrec.datamodules.vip5_config import (
    DirectConfig,
    EvaluationConfig,
    ExplanationConfig,
    PromptConfig,
    TrainingConfig,
)
from mmrec.datamodules.vip5_tasks import TASK_INDEX, EpochSampler, explanation_text, feature_words, loo_codes
from mmrec.store import StoreError


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vip5data")
    ds = toy_reviews_dataset(root)
    store = toy_feature_store(root, ds.item_ids)
    return {"root": root, "dataset": ds.path, "store": store.path, "t5": tiny_t5_dir(root)}


GROUPS = {
    "prompts": PromptConfig,
    "training": TrainingConfig,
    "direct": DirectConfig,
    "explanation": ExplanationConfig,
    "evaluation": EvaluationConfig,
}


def _dm(env: dict[str, Path], **kw) -> VIP5DataModule:
    groups = {
        "prompts": {"max_source_length": 200},
        "training": {"batch_size": 16},
        "direct": {"negatives": 9},
        "explanation": {},
        "evaluation": {"batch_size": 4},
    }
    for name in GROUPS:
        groups[name].update(kw.pop(name, {}))
    args = dict(
        dataset=str(env["dataset"]),
        tokenizer=str(env["t5"]),
        stores={"image": str(env["store"])},
        derived_dir=str(env["root"] / "derived"),
        **{name: GROUPS[name](**values) for name, values in groups.items()},
    )
    args.update(kw)
    return VIP5DataModule(**args)


def test_catalog_and_mixed_task_batches(env: dict[str, Path]) -> None:
    dm = _dm(env)
    cat = dm.catalog
    assert cat["num_items"] == 30 and cat["num_users"] == 24 and cat["feature_dims"] == {"image": 6}
    assert cat["visual_tokens"] == 2 and cat["tasks"] == ["sequential", "direct", "explanation"]
    assert cat["template_kinds"]["sequential"] == ["next", "yes_no"] and cat["mask_history"] is True
    # the toy data has no review headline: the two templates that need one are dropped, the rest kept
    assert [t.id for t in dm.template_set.templates if t.task == "explanation"] == [
        f"C-{i}" for i in (1, 3, 4, 6, 7, 8, 9, 10, 11, 12)
    ]
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
    # VIP5's held-out direct template (B-8) is a choose prompt: no unseen yes/no set
    assert {s.name for s in sets} == {"direct/seen/yes_no", "direct/seen/choose", "direct/unseen/choose"}
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


def test_explanation_pairs_are_split_by_time_as_leave_one_out(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["explanation"])
    dm.setup("fit")
    ex = dm.task_data.explanation
    by_code = {code: ex.indices(code) for code in (0, 1, 2)}
    assert all(len(rows) for rows in by_code.values())
    for code, rows in by_code.items():
        for r in rows.tolist():
            seq = dm.sequences[int(ex.users[r])]
            item = int(ex.items[r])
            if code == 2:  # the user's test interaction
                assert item == seq[-1]
            elif code == 1:  # the validation interaction
                assert item == seq[-2]
            else:  # trained on: an item of the user's training sequence
                assert item in dm.splits.train[int(ex.users[r])]
    pairs = {c: set(zip(ex.users[r].tolist(), ex.items[r].tolist())) for c, r in by_code.items()}
    assert not pairs[0] & pairs[2] and not pairs[0] & pairs[1]
    # every evaluated user with a test review has exactly one test pair
    assert len(pairs[2]) == len({u for u, _ in pairs[2]})
    train_set = dm.train_dataloader().dataset
    drawn = set()
    for epoch in range(3):  # each epoch draws one training pair per user with reviews
        for i in range(len(train_set)):
            e = train_set[(epoch, i)]
            drawn.add((e["user"], next(it for it in e["src"].mention_items if it)))
    assert drawn <= pairs[0] and len(drawn) > len(train_set)
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["task"] == "explanation" and len(batch["references"]) == batch["input_ids"].shape[0]
    assert batch["task_ids"].eq(TASK_INDEX["explanation"]).all()
    assert all(ex.features[r] for r in by_code[0].tolist())  # a feature word for every training pair


def test_loo_codes_and_feature_words() -> None:
    assert loo_codes(np.array([3, 3, 5, 5, 5, 7, 7, 7, 7])).tolist() == [0, 0, 0, 1, 2, 0, 0, 1, 2]
    assert loo_codes(np.array([], dtype=np.int64)).tolist() == []
    texts = ["soft fabric fabric", "soft colour", "colour soft tight", "it is ok", "..."]
    words = feature_words(texts, np.array([0, 0, 2, 0, 0]))
    # rarity over training texts only: "tight" (test) counts 0, "fabric" 1, "soft" 2; short words as a
    # last resort; nothing for a text without letters
    assert words == ["fabric", "colour", "tight", "it", ""]


def test_headline_templates_are_kept_when_the_data_has_headlines(env: dict[str, Path], tmp_path: Path) -> None:
    from mmrec.data.canonical import CanonicalDataset

    ds = CanonicalDataset.load(env["dataset"])
    inter = ds.interactions.copy()
    inter["summary"] = ["Very comfy"] * len(inter)
    new = write_dataset(tmp_path / "with_summary", ds.items, inter, name="toy2", source_format="python")
    dm = _dm(env, dataset=str(new.path), tasks=["explanation"], derived_dir=str(tmp_path / "d"))
    assert {"C-2", "C-5"} <= {t.id for t in dm.template_set.templates}
    dm.setup("fit")
    assert dm.task_data.explanation.headlines[0] == "Very comfy"
    with pytest.raises(DatasetError, match="headline_column"):
        _dm(env, explanation={"headline_column": "title_text"})


def test_training_negatives_avoid_every_positive_of_the_user(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["direct"], direct={"negatives": 9, "train_candidates": 12})
    ds = dm.train_dataloader().dataset
    checked = 0
    for epoch in range(4):
        for i in range(len(ds)):
            e = ds[(epoch, i)]
            full = set(dm.sequences[e["user"]])  # training, validation and test items
            heldout = {dm.sequences[e["user"]][-1], dm.sequences[e["user"]][-2]}
            listed = {it for it in e["src"].mention_items if it}
            if len(listed) > 1:  # choose prompt: the positive (a training item) + negatives
                assert len(listed - full) == 11 and not (listed - {e["target_item"]}) & full
                assert not listed & heldout
            elif e["labels"][0] == dm.builder.answer_token_ids()[1]:  # a "no" yes/no prompt
                assert not listed & full
            checked += 1
    assert checked > 50


def test_sequential_training_carries_history_and_future_items(env: dict[str, Path]) -> None:
    dm = _dm(
        env,
        tasks=["sequential"],
        prompts={"max_source_length": 200, "max_history": 3, "sequential_yes_no": False},
        training={"batch_size": 16, "future_targets": 2},
    )
    assert dm.catalog["template_kinds"]["sequential"] == ["next"]
    ds = dm.train_dataloader().dataset
    for i in range(len(ds)):
        e = ds[(0, i)]
        seq = dm.splits.train[e["user"]]
        t = seq.index(e["target_item"])
        assert e["history"] == seq[max(0, t - 3) : t]
        assert e["future"] == seq[t + 1 : t + 3]
        assert [it for it in e["src"].feature_items if it] == [h for h in e["history"] for _ in range(2)]
    batch = next(iter(dm.train_dataloader()))
    assert batch["history_items"].shape[0] == batch["future_items"].shape[0] == batch["input_ids"].shape[0]
    assert batch["future_items"].shape[1] <= 2


def test_sequential_yes_no_templates_train_but_are_not_evaluated(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["sequential"])
    ds = dm.train_dataloader().dataset
    yes, no = dm.builder.answer_token_ids()
    kinds = {dm.template_set.templates[ds[(0, i)]["template"]].kind for i in range(len(ds))}
    answers = {ds[(e, i)]["labels"][0] for e in range(3) for i in range(len(ds))
               if dm.template_set.templates[ds[(e, i)]["template"]].kind == "yes_no"}  # fmt: skip
    assert kinds == {"", "yes_no"} and answers == {yes, no}
    for s in dm.eval_sets("test"):
        assert all(t.kind == "" for t in s.templates) and [t.id for t in s.templates][-1] in ("A-6", "A-9")


def test_grouped_configs_reject_bad_values_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"prompts\.max_history must be >= 1"):
        PromptConfig(max_history=0)
    with pytest.raises(ValueError, match=r"prompts\.item_indexing"):
        PromptConfig(item_indexing="alphabetical")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one negative"):
        DirectConfig(train_candidates=1)
    with pytest.raises(ValueError, match=r"evaluation\.test_template_splits"):
        EvaluationConfig(test_template_splits=["seen", "held_out"])
    with pytest.raises(ValueError, match=r"training\.future_targets"):
        TrainingConfig(future_targets=-1)


def test_eval_batches_for_ranking(env: dict[str, Path]) -> None:
    dm = _dm(env, tasks=["sequential"], evaluation={"val_max_users": 5, "batch_size": 4})
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


def test_model_inputs_give_baselines_the_training_split_and_the_protocol(env: dict[str, Path]) -> None:
    from mmrec.protocols import ModelInputSource

    dm = _dm(env, tasks=["sequential"], evaluation={"mask_history": False})
    assert isinstance(dm, ModelInputSource)
    inputs = dm.model_inputs()
    m = inputs["train_interactions"]
    assert m.shape == (dm.catalog["num_users"], dm.catalog["num_items"] + 1) and m[:, 0].sum() == 0
    # the same training split as the popularity prior and the training sequences, no held-out item counted
    assert np.allclose(np.asarray(m.sum(axis=0)).ravel(), inputs["item_popularity"].numpy())
    seqs = inputs["train_sequences"]
    assert [int(m[u].sum()) for u in range(m.shape[0])] == [len(s) for s in seqs]
    assert dm.protocol.split == "leave-one-out" and dm.protocol.mask_history is False
    assert _dm(env, tasks=["sequential"]).protocol.mask_history is True


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
