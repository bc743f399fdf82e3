"""`mmrec fit | test | predict` through the real LightningCLI entry point."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers import toy_dataset, toy_store

from mmrec.cli import main


def _config(tmp_path: Path, *, epochs: int = 2) -> Path:
    ds = toy_dataset(tmp_path, num_items=25, num_users=30, min_len=3, max_len=7)
    store = toy_store(tmp_path, ds.item_ids, dim=6)
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "toy"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {
            "class_path": "mmrec.models.MultimodalSequential",
            "init_args": {"dim": 8, "num_layers": 1},
        },
        "data": {
            "class_path": "mmrec.datamodules.sequential.SequentialDataModule",
            "init_args": {
                "dataset": str(ds.path),
                "max_len": 5,
                "batch_size": 8,
                "stores": {"img": str(store.path)},
            },
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fit_then_test_then_predict_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "toy" / "version_0"
    # the short summary: model, checkpoints, the main test metrics once, where the full metrics are
    assert "model sequential/multimodal:" in out and "trainable parameters of" in out
    assert f"best checkpoint: {run / 'checkpoints'}" in out and f"last checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in out
    assert "test (best checkpoint): hr@5" in out and "(30 users)" in out
    test_line = next(line for line in out.splitlines() if line.startswith("[mmrec] test ("))
    assert test_line.count("ndcg@10") == 1 and "recall" not in test_line and "test/" not in out
    assert f"all metrics: {run / 'test_metrics.json'}" in out
    # stdout is not a terminal here: one progress line per epoch instead of bars
    assert out.count("[mmrec] epoch ") == 2 and "epoch 2/2 done in" in out and "val/ndcg@10" in out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"hr@10", "ndcg@10", "mrr", "num_users"} <= set(metrics) and metrics["num_users"] == 30
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    best = next(c for c in ckpts if c.name != "last.ckpt")

    assert main(["test", "--config", str(cfg), "--ckpt_path", str(best)]) == 0
    preds = tmp_path / "preds.jsonl"
    args = [
        "predict",
        "--config",
        str(cfg),
        "--ckpt_path",
        str(best),
        "--trainer.callbacks+=mmrec.callbacks.JsonlPredictionWriter",
        f"--trainer.callbacks.output={preds}",
    ]
    assert main(args) == 0
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 30 and len(lines[0]["items"]) == 10 and lines[0]["items"][0].startswith("i")

    # resume from the last checkpoint for more epochs
    assert (
        main(
            [
                "fit",
                "--config",
                str(cfg),
                "--trainer.max_epochs",
                "3",
                "--ckpt_path",
                str(run / "checkpoints" / "last.ckpt"),
            ]
        )
        == 0
    )
    with open(tmp_path / "runs" / "toy" / "version_3" / "metrics.csv") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f) if r.get("val/ndcg@10")]
    # 2 epochs x 3 batches were restored from the checkpoint: the resumed run never logs a step below 5
    assert steps and min(steps) >= 5 and max(steps) == 8


def _printed_config(capsys: pytest.CaptureFixture[str], cfg: Path, *more: str) -> str:
    assert main(["fit", "--config", str(cfg), *more, "--print_config"]) == 0
    return capsys.readouterr().out


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    first = _printed_config(capsys, cfg)
    again = tmp_path / "printed.yaml"
    again.write_text(first)
    second = _printed_config(capsys, again)
    assert first == second
    parsed = yaml.safe_load(first)
    assert parsed["model"]["class_path"] == "mmrec.models.MultimodalSequential"
    assert "catalog" not in parsed["model"]["init_args"]  # linked from the datamodule, never repeated


def test_registry_keys_in_class_path_and_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"]["class_path"] = "sequential/multimodal"
    raw["data"]["class_path"] = "data/sequential"
    keyed = tmp_path / "keys.yaml"
    keyed.write_text(yaml.safe_dump(raw))
    from_keys, from_paths = (yaml.safe_load(_printed_config(capsys, c)) for c in (keyed, cfg))
    assert from_keys["model"].pop("class_path") == "mmrec.models.sequential.MultimodalSequential"
    assert from_keys["data"].pop("class_path") == "mmrec.datamodules.sequential.SequentialDataModule"
    for part in ("model", "data"):
        from_paths[part].pop("class_path")
    assert from_keys == from_paths  # the same classes: the same config
    # --model <key> switches the model; dotted overrides reach its init_args
    printed = yaml.safe_load(
        _printed_config(capsys, keyed, "--model", "sequential/sasrec", "--model.init_args.num_heads=1")
    )
    assert printed["model"]["class_path"] == "mmrec.models.sequential.SASRec"
    assert printed["model"]["init_args"]["num_heads"] == 1 and printed["model"]["init_args"]["dim"] == 8
    # a misspelt key: one line with the closest registered keys
    assert main(["fit", "--config", str(keyed), "--model", "sequential/sasrc", "--print_config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown class_path 'sequential/sasrc'. Did you mean 'sequential/sasrec'")
    assert len(err.splitlines()) == 1


def test_misspelt_keys_get_one_line_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"]["init_args"]["dimm"] = raw["model"]["init_args"].pop("dim")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'dimm' in model.init_args (MultimodalSequential, sequential/multimodal).")
    assert "Did you mean 'dim'?" in err and "Union" not in err and "NoneType" not in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert main(["fit", "--config", str(cfg), "--data.init_args.max_lenn=3"]) == 2
    assert "Did you mean 'max_len'?" in capsys.readouterr().err
    assert main(["fit", "--config", str(cfg), "--trainer.max_epoch=3"]) == 2  # no abbreviations
    assert "Did you mean '--trainer.max_epochs'" in capsys.readouterr().err
    assert main(["fit", "--config", str(cfg), "--model.init_args.dim=abc"]) == 2
    assert "expected int" in capsys.readouterr().err


def test_missing_data_is_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    assert main(["fit", "--config", str(cfg), f"--data.init_args.dataset={tmp_path / 'nowhere'}"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: dataset folder {tmp_path / 'nowhere'} does not exist")
    assert "mmrec data prepare" in errors[0] and "Traceback" not in err and "Namespace" not in err
    assert main(["--debug", "fit", "--config", str(cfg), f"--data.init_args.dataset={tmp_path / 'nowhere'}"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_plain_pickle_as_ckpt_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    cfg = _config(tmp_path)
    fake = tmp_path / "weights.pkl"
    fake.write_bytes(pickle.dumps({"a": 1}))
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(fake)]) == 1
    assert "is not a Lightning checkpoint (a plain pickle)" in capsys.readouterr().err


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "mmrec fit --config" in capsys.readouterr().out
