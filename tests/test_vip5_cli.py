"""VIP5 through the real `mmrec` CLI: one-batch fits of both models, shipped configs, missing-data errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_vip5_support import tiny_bert_dir, tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.cli import main

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, model: dict, data: dict, monitor: str, name: str) -> Path:
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "limit_train_batches": 1,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": name},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": monitor, "mode": "max"},
                }
            ],
        },
        "model": model,
        "data": {"class_path": "mmrec.datamodules.vip5.VIP5DataModule", "init_args": data},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vip5cli")
    ds = toy_reviews_dataset(root)
    return {
        "root": root,
        "dataset": ds.path,
        "image": toy_feature_store(root, ds.item_ids, dim=6).path,
        "text": toy_feature_store(root, ds.item_ids, dim=5, name="text", seed=3).path,
        "t5": tiny_t5_dir(root),
        "bert": tiny_bert_dir(root),
    }


def test_one_batch_fit_of_vip5_t5(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(
        tmp_path,
        {
            "class_path": "mmrec.models.VIP5",
            "init_args": {
                "backbone": str(toy["t5"]),
                "num_beams": 3,
                "adapter_per_task": True,
                "explanation_max_tokens": 6,
            },
        },
        {
            "dataset": str(toy["dataset"]),
            "tokenizer": str(toy["t5"]),
            "stores": {"image": str(toy["image"])},
            "negatives": 9,
            "batch_size": 8,
            "eval_batch_size": 4,
            "max_source_length": 200,
            "derived_dir": str(tmp_path / "derived"),
        },
        "val/sequential/seen/ndcg@10",
        "t5",
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters of" in out and "[mmrec] test (best checkpoint):" in out
    assert "explanation" not in out.split("[mmrec] test (")[1]  # group metrics stay in the metrics file
    run = tmp_path / "runs" / "t5" / "version_0"
    metrics = json.loads((run / "test_metrics.json").read_text())
    for key in (
        "test/sequential/seen/hr@10",
        "test/sequential/unseen/ndcg@5",
        "test/direct/seen/ndcg@10",
        "test/direct/unseen/hr@1",
        "test/explanation/seen/bleu4",
        "test/explanation/unseen/rougeL",
    ):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, key
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    assert state and not any(k.startswith("backbone.") and "layer_norm" not in k for k in state)


def test_one_batch_fit_and_predict_of_the_ranking_head(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(
        tmp_path,
        {"class_path": "mmrec.models.VIP5Ranking", "init_args": {"backbone": str(toy["bert"])}},
        {
            "dataset": str(toy["dataset"]),
            "tokenizer": str(toy["bert"]),
            "stores": {"image": str(toy["image"]), "text": str(toy["text"])},
            "tasks": ["sequential"],
            "batch_size": 8,
            "eval_batch_size": 8,
            "max_source_length": 96,
        },
        "val/ndcg@10",
        "rank",
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "[mmrec] test (best checkpoint): hr@1" in out and "all metrics:" in out and "test_metrics.json" in out
    run = tmp_path / "runs" / "rank" / "version_0"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"test/hr@10", "test/sequential/seen/mrr", "test/sequential/unseen/ndcg@10"} <= set(metrics)
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    preds = tmp_path / "preds.jsonl"
    args = [
        "predict",
        "--config",
        str(cfg),
        "--ckpt_path",
        str(ckpt),
        "--trainer.callbacks+=mmrec.callbacks.JsonlPredictionWriter",
        f"--trainer.callbacks.output={preds}",
        "--trainer.limit_predict_batches",
        "1",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert rows and len(rows[0]["items"]) == 10 and rows[0]["items"][0].startswith("i")


@pytest.mark.parametrize("name", ["demo", "clothing", "sports", "toys", "beauty"])
def test_shipped_configs_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--config", str(REPO / "configs" / f"vip5_{name}.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].rsplit(".", 1)[1] in ("VIP5", "VIP5Ranking")
    assert "catalog" not in printed["model"]["init_args"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "beauty",
            [
                "mmrec data prepare sequence/s3rec ../shared/data/amazon2014-beauty/s3rec/Beauty.txt",
                "mmrec embed --config configs/embed/beauty.yaml",
            ],
        ),
        (
            "clothing",
            [
                "mmrec data prepare amazon/2014 reviews_Clothing_Shoes_and_Jewelry_5.json.gz",
                "mmrec embed --config configs/embed/clothing.yaml",
            ],
        ),
        ("demo", ["mmrec embed --config configs/embed/demo.yaml"]),
    ],
)
def test_config_without_its_data_stops_with_the_commands(
    name: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fit", "--config", str(REPO / "configs" / f"vip5_{name}.yaml")]
    if name == "demo":  # the dataset ships; its store is what is missing
        args += ["--data.init_args.stores.image", str(tmp_path / "no_store")]
    else:
        args += ["--data.init_args.dataset", str(tmp_path / "missing")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err and "Union" not in err
    message = err.split("error: ", 1)[1]  # the problem, then the commands that fix it, one per line
    for cmd in expected:
        assert cmd in message
