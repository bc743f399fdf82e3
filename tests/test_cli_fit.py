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
    assert "trainable of" in out and "test metrics" in out
    run = tmp_path / "runs" / "toy" / "version_0"
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
        "--trainer.callbacks+=mmrec.lightning_cli.JsonlPredictionWriter",
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


def _printed_config(capsys: pytest.CaptureFixture[str], cfg: Path) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg), "--print_config"])
    assert exit_info.value.code in (0, None)
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


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "mmrec fit --config" in capsys.readouterr().out
