"""A fitted checkpoint's test metrics beside MostPop's on the same split (the end of `make demo`)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import yaml
from helpers import toy_dataset

from mmrec.bench.quality.beside import beside_mostpop_from_checkpoint, best_checkpoint
from mmrec.cli import main

REPO = Path(__file__).resolve().parents[1]


def _fit_sasrec(tmp_path: Path) -> Path:
    ds = toy_dataset(tmp_path, num_items=25, num_users=30, min_len=3, max_len=7)
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "sas"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {"class_path": "mmrec.models.SASRec", "init_args": {"dim": 8, "num_layers": 1}},
        "data": {
            "class_path": "mmrec.datamodules.sequential.SequentialDataModule",
            "init_args": {"dataset": str(ds.path), "max_len": 5, "batch_size": 8},
        },
    }
    path = tmp_path / "sas.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    return tmp_path / "runs" / "sas"


def test_beside_mostpop_from_a_fitted_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fit_sasrec(tmp_path)
    capsys.readouterr()
    ckpt = best_checkpoint(run)
    assert ckpt.name.startswith("epoch=") and ckpt.parent.parent.name == "version_0"
    out = beside_mostpop_from_checkpoint(ckpt)
    fitted = json.loads((run / "version_0" / "test_metrics.json").read_text())  # mmrec fit's own test run
    assert out["model"] == "sequential/sasrec" and out["protocol"]["name"] == "recbole"
    assert out["num_users"] == fitted["num_users"] == 30
    for k in ("hr@10", "ndcg@10", "mrr", "coverage@10"):
        assert out["test"][k] == pytest.approx(fitted[k], abs=1e-6), k  # same split, protocol, evaluator
    assert out["same_top10_share"] == pytest.approx(fitted["same_top10_share"], abs=1e-6)
    assert out["mostpop"]["same_top10_share"] == 1.0 and 0 < out["mostpop"]["hr@20"] <= 1
    assert out["ratio_ndcg@10"] == pytest.approx(out["test"]["ndcg@10"] / out["mostpop"]["ndcg@10"], rel=1e-3)

    script = runpy.run_path(str(REPO / "bench" / "beside_mostpop.py"), run_name="beside")
    assert script["main"](["--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "beside MostPop, same split and protocol (recbole" in printed
    last = json.loads(printed.strip().splitlines()[-1])
    assert set(last) == {"model", "test", "mostpop", "same_top10_share", "protocol"}
    assert last["test"] == out["test"] and last["mostpop"] == out["mostpop"]


def test_best_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mmrec fit"):
        best_checkpoint(tmp_path)
