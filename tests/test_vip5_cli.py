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
                "backbone": {"name": str(toy["t5"])},
                "adapter": {"name": "bottleneck/houlsby", "per_task": True},
                "decoding": {"num_beams": 3, "eval_ks": [1, 3], "explanation_max_tokens": 6},
            },
        },
        {
            "dataset": str(toy["dataset"]),
            "tokenizer": str(toy["t5"]),
            "stores": {"image": str(toy["image"])},
            "prompts": {"max_source_length": 200},
            "training": {"batch_size": 8},
            "direct": {"negatives": 9},
            "evaluation": {"batch_size": 4},
            "derived_dir": str(tmp_path / "derived"),
        },
        "val/sequential/seen/ndcg@3",
        "t5",
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters of" in out and "[mmrec] test (best checkpoint):" in out
    assert "explanation" not in out.split("[mmrec] test (")[1]  # group metrics stay in the metrics file
    run = tmp_path / "runs" / "t5" / "version_0"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert "test/sequential/seen/mrr" not in metrics  # generated lists: MRR@K, misses score 0
    for key in (
        "test/sequential/seen/hr@3",
        "test/sequential/seen/mrr@3",
        "test/sequential/unseen/ndcg@3",
        "test/direct/seen/ndcg@3",
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
        {
            "class_path": "mmrec.models.VIP5Ranking",
            "init_args": {
                "backbone": {"name": str(toy["bert"])},
                "adapter": {"name": "lora/peft", "lora_rank": 2},
                "head": {"temperature": 0.2},
            },
        },
        {
            "dataset": str(toy["dataset"]),
            "tokenizer": str(toy["bert"]),
            "stores": {"image": str(toy["image"]), "text": str(toy["text"])},
            "tasks": ["sequential"],
            "prompts": {"max_source_length": 96, "sequential_yes_no": False},
            "training": {"batch_size": 8, "future_targets": 2},
            "evaluation": {"batch_size": 8},
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
    # the evaluator's beyond-accuracy values and the named protocol, for the unseen templates too
    assert 0.0 <= metrics["test/same_top10_share"] <= 1.0 and "test/sequential/unseen/coverage@10" in metrics
    assert metrics["protocol"]["mask_history"] is True and metrics["protocol"]["split"] == "leave-one-out"
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
    model, data = printed["model"]["init_args"], printed["data"]["init_args"]
    assert "catalog" not in model
    # grouped configs: the adapter by its registry key, no flat 25-argument blocks
    assert model["adapter"]["name"] in ("bottleneck/houlsby", "lora/peft", "none")
    assert {"backbone", "adapter", "features", "optim"} <= set(model)
    assert {"prompts", "training", "direct", "explanation", "evaluation"} <= set(data)
    assert "max_history" not in data and "lr" not in model


@pytest.mark.parametrize(
    ("cls", "section", "override", "message"),
    [
        ("model", "adapter", {"name": "houlsby"}, "registry keys"),
        ("model", "head", {"temperature": 0}, "head.temperature must be > 0"),
        ("model", "metrics", {"eval_ks": [0, 10]}, "metrics.eval_ks must be positive"),
        ("data", "prompts", {"max_history": 0}, "prompts.max_history must be >= 1"),
        ("data", "evaluation", {"val_template_splits": ["held_out"]}, "subset of ['seen', 'unseen']"),
    ],
)
def test_grouped_configs_are_read_by_jsonargparse_and_checked(
    cls: str, section: str, override: dict, message: str
) -> None:
    from jsonargparse import ArgumentParser

    from mmrec.datamodules.vip5 import VIP5DataModule
    from mmrec.datamodules.vip5_config import PromptConfig
    from mmrec.models import VIP5Ranking
    from mmrec.models.vip5_config import AdapterConfig, RankingHeadConfig

    shipped = yaml.safe_load((REPO / "configs" / "vip5_demo.yaml").read_text())[cls]["init_args"]

    def parse(values: dict) -> object:
        parser = ArgumentParser(exit_on_error=False)
        target = VIP5Ranking if cls == "model" else VIP5DataModule
        parser.add_class_arguments(target, "x", skip={"catalog"}, instantiate=False)
        return parser.instantiate_classes(parser.parse_object({"x": values}))

    ok = parse(shipped)
    if cls == "model":  # the YAML groups arrive as the typed, checked dataclasses
        assert ok.x.adapter == AdapterConfig(name="bottleneck/houlsby", reduction_factor=8)
        assert isinstance(ok.x.head, RankingHeadConfig) and ok.x.head.future_weight == 1.0
    else:
        assert isinstance(ok.x.prompts, PromptConfig) and ok.x.prompts.max_history == 5
        assert ok.x.training.future_targets == 3
    bad = {**shipped, section: {**(shipped.get(section) or {}), **override}}
    with pytest.raises((ValueError, TypeError)) as e:
        parse(bad)
    assert message in str(e.value)


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
