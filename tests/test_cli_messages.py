"""What a user reads from `mmrec fit` (issue 12, items 6-7): one-line errors with the fix, and a short
summary that names the checkpoints (the last one too, even after testing the best)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from helpers import toy_dataset

from mmrec.cli import main


def _sasrec_config(tmp_path: Path, **top: object) -> Path:
    ds = toy_dataset(tmp_path, num_items=12, num_users=10, min_len=3, max_len=5, name=f"toy{len(top)}")
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "msg"},
            },
            "callbacks": [
                {
                    "class_path": "mmrec.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {
            "class_path": "sequential/sasrec",
            "init_args": {"dim": 8, "num_layers": 1, "num_heads": 1},
        },
        "data": {"class_path": "data/sequential", "init_args": {"dataset": str(ds.path), "max_len": 4}},
        **top,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith(("[mmrec]", "Seed set"))]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_config_mistakes_are_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _sasrec_config(tmp_path, test_afterfit=True)  # a top-level key typo in the YAML
    assert main(["fit", "--config", str(cfg)]) == 2
    assert _one_error_line(capsys) == (
        "error: unknown key 'test_afterfit' at the top of the fit config. Did you mean 'test_after_fit'? "
        "Top-level keys: seed_everything, trainer, model, data, test_after_fit, threads, ckpt_path, weights_only."
    )
    cfg = _sasrec_config(tmp_path)
    assert main(["fit", "--config", str(cfg), "--model.init_args.dim", "abc"]) == 2
    assert _one_error_line(capsys) == "error: model.init_args.dim: expected int; got 'abc'."
    assert main(["fit", "--config", str(cfg), "--model.init_args.num_head", "2"]) == 2
    assert _one_error_line(capsys).startswith(
        "error: unknown key 'num_head' in model.init_args (SASRec, sequential/sasrec). Did you mean 'num_heads'?"
    )
    assert main(["fit", "--config", str(cfg), "--trainer.max_epoch", "1"]) == 2
    assert _one_error_line(capsys).startswith(
        "error: unknown option '--trainer.max_epoch'. Did you mean '--trainer.max_epochs'"
    )
    assert main(["fit", "--config", str(cfg), "--data.init_args.dataset", str(tmp_path / "nowhere")]) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"error: dataset folder {tmp_path / 'nowhere'} does not exist. Create it with")
    assert "mmrec data synth --out" in line


def test_a_plain_pickle_is_refused_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "model.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": {}}))
    cfg = _sasrec_config(tmp_path)
    assert main(["fit", "--config", str(cfg), "--ckpt_path", str(plain)]) == 1
    line = _one_error_line(capsys)
    assert f"--ckpt_path {plain} is not a Lightning checkpoint (a plain pickle)" in line
    assert "mmap" not in line and "zipfile" not in line
    assert main(["recommend", "--ckpt", str(plain), "--user", "u000"]) != 0
    assert f"--ckpt {plain} is not a Lightning checkpoint (a plain pickle)" in _one_error_line(capsys)


def test_fit_summary_names_best_and_last_checkpoint_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _sasrec_config(tmp_path, test_after_fit=True)
    assert main(["fit", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    ckpts = tmp_path / "runs" / "msg" / "version_0" / "checkpoints"
    summary = [ln for ln in captured.out.splitlines() if ln.startswith("[mmrec] ") and "checkpoint" in ln]
    assert summary[0].startswith(f"[mmrec] best checkpoint: {ckpts / 'epoch=0-step='}")
    # testing the best checkpoint restores the callback's state of that time: the last one is still named
    assert summary[1] == (
        f"[mmrec] last checkpoint: {ckpts / 'last.ckpt'} (epoch 1, to resume: --ckpt_path {ckpts / 'last.ckpt'})"
    )
    assert summary[2].startswith("[mmrec] test (best checkpoint): hr@5")
    assert summary[2].count("ndcg@10") == 1 and "test/" not in captured.out  # each metric once, short names
    # no Lightning advertising, no progress bars in a log, no internal deprecation warnings
    assert "Tip:" not in captured.err and "LeafSpec" not in captured.err and "%|" not in captured.err


def test_lightning_verbs_refuse_list_items_by_index_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", "--config", "configs/sasrec_demo.yaml", "--trainer.callbacks.1.init_args.patience=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot set a list item by index; change `trainer.callbacks` in a config file" in err
