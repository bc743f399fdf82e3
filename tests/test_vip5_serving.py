"""Serving VIP5 checkpoints (issue 12, item 2): the ranking head goes through `mmrec fit -> index -> recommend`
with the same queries as `mmrec predict`; a model that cannot be served is refused by `mmrec index` up front,
with the command that gives its top-K lists instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_vip5_cli import _write
from test_vip5_support import tiny_bert_dir, tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.cli import main
from mmrec.retrieval.recommender import NotServableError, Recommender, servability_problem


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vip5serve")
    ds = toy_reviews_dataset(root)
    return {
        "root": root,
        "dataset": ds.path,
        "image": toy_feature_store(root, ds.item_ids, dim=6).path,
        "text": toy_feature_store(root, ds.item_ids, dim=5, name="text", seed=3).path,
        "bert": tiny_bert_dir(root),
        "t5": tiny_t5_dir(root),
    }


def _fit(toy: dict[str, Path], tmp_path: Path, model: dict, data: dict, monitor: str, name: str) -> Path:
    cfg = _write(tmp_path, model, {"dataset": str(toy["dataset"]), **data}, monitor, name)
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    return next((tmp_path / "runs" / name / "version_0" / "checkpoints").glob("*.ckpt"))


def _rank_checkpoint(toy: dict[str, Path], tmp_path: Path) -> Path:
    return _fit(
        toy,
        tmp_path,
        {"class_path": "vip5/ranking", "init_args": {"backbone": {"name": str(toy["bert"])}}},
        {
            "tokenizer": str(toy["bert"]),
            "stores": {"image": str(toy["image"]), "text": str(toy["text"])},
            "tasks": ["sequential"],
            "prompts": {"max_source_length": 96, "sequential_yes_no": False},
            "training": {"batch_size": 8},
            "evaluation": {"batch_size": 8},
        },
        "val/ndcg@10",
        "rank",
    )


def test_ranking_head_is_indexed_and_served_like_predict(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _rank_checkpoint(toy, tmp_path)
    capsys.readouterr()
    index = tmp_path / "index"
    assert main(["index", "--ckpt", str(ckpt), "--out", str(index)]) == 0
    assert "calibrating on item vectors" not in capsys.readouterr().err  # user queries were built

    rec = Recommender.from_checkpoint(ckpt)
    users = rec.user_ids[:3]
    assert (
        main(["recommend", "--ckpt", str(ckpt), "--index", str(index), "--user", ",".join(users), "--k", "5"])
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["user_id"] for x in lines] == users
    for line in lines:
        assert len(line["items"]) == 5 and not set(line["items"]) & set(rec.user_history(line["user_id"]))
        assert line["items"] == [i for i, _ in rec.recommend_user(line["user_id"], k=5)]

    # the served query of a known user is the one `mmrec predict` scores (same prompt, same vector)
    batch = next(iter(rec.datamodule.predict_dataloader()))
    served = rec.user_vectors([rec.user_ids[0]])
    with torch.inference_mode():
        predicted = rec.model.query_vectors({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    torch.testing.assert_close(served[0], predicted[0].float())


def test_ranking_head_serves_a_new_user_given_by_items(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _rank_checkpoint(toy, tmp_path)
    rec = Recommender.from_checkpoint(ckpt)
    capsys.readouterr()
    assert main(["recommend", "--ckpt", str(ckpt), "--items", ",".join(rec.item_ids[:3]), "--k", "4"]) == 0
    new_user = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(new_user) == 1 and len(new_user[0]["items"]) == 4


def test_generative_vip5_is_refused_by_index_with_the_predict_command(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _fit(
        toy,
        tmp_path,
        {
            "class_path": "vip5/t5",
            "init_args": {
                "backbone": {"name": str(toy["t5"])},
                "decoding": {"num_beams": 2, "eval_ks": [1, 2]},
            },
        },
        {
            "tokenizer": str(toy["t5"]),
            "stores": {"image": str(toy["image"])},
            "tasks": ["sequential"],
            "prompts": {"max_source_length": 200},
            "training": {"batch_size": 8},
            "evaluation": {"batch_size": 4},
            "derived_dir": str(tmp_path / "derived"),
        },
        "val/sequential/seen/ndcg@2",
        "t5",
    )
    capsys.readouterr()
    index = tmp_path / "index"
    assert main(["index", "--ckpt", str(ckpt), "--out", str(index)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: this checkpoint cannot be served by `mmrec index` / `mmrec recommend`: ")
    assert "the model (VIP5) has no item table" in err and "Traceback" not in err
    config = ckpt.parent.parent / "config.yaml"
    assert f"mmrec predict --config {config} --ckpt_path {ckpt.resolve()} " in err
    assert not index.exists()  # nothing half-built
    assert main(["recommend", "--ckpt", str(ckpt), "--user", "x"]) != 0
    assert "cannot be served" in capsys.readouterr().err


def test_servability_names_what_is_missing() -> None:
    class Tower:
        def item_vectors(self) -> torch.Tensor:
            return torch.zeros(2, 1)

        def query_vectors(self, batch: dict) -> torch.Tensor:
            return torch.zeros(1, 1)

    class NoQueries:
        pass

    assert servability_problem(Tower(), NoQueries()) == (
        "its datamodule (NoQueries) cannot turn a user's item history into a query (`query_batch(histories, users)`)"
    )
    with pytest.raises(
        NotServableError, match=re.escape("`mmrec predict --config <the run's config.yaml> --ckpt_path CKPT")
    ):
        Recommender(Tower(), type("DM", (), {"item_ids": [], "user_ids": [], "sequences": [], "splits": 1})())
