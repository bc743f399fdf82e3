"""Every registered model goes fit -> index -> recommend through the command line, or is refused up front.

Issue 12: a checkpoint written by ``mmrec fit`` is either served by ``mmrec index`` / ``mmrec recommend`` or
both commands refuse it with a message that says what to run instead. Each model with ``tiny`` registry
metadata is fitted for one epoch on a toy dataset (two random feature stores attached, so content models have
something to read), indexed with faiss, and asked for a known user's and a new history's top-5. VIP5's models
need their own datamodule and are covered in ``tests/test_vip5_serving.py``; MostPop has no ``tiny`` entry
(it has no arguments) and is added here explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import toy_dataset, toy_store

from mmrec.cli import main
from mmrec.models import MODELS

SERVED = sorted(
    [k for k in MODELS.list("*") if "tiny" in MODELS.meta(k) and not k.startswith("vip5/")]
    + ["baseline/mostpop"]
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("serve")
    ds = toy_dataset(root, num_items=25, num_users=30, min_len=4, max_len=8)
    stores = {
        "img": str(toy_store(root, ds.item_ids, dim=6, seed=1, name="img").path),
        "txt": str(toy_store(root, ds.item_ids, dim=5, seed=2, name="txt").path),
    }
    return {"dataset": str(ds.path), "stores": stores, "items": list(ds.item_ids)}


def _config(tmp_path: Path, key: str, toy: dict[str, object]) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "m"},
            },
            "callbacks": [
                {
                    "class_path": "mmrec.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {"class_path": key, "init_args": dict(MODELS.meta(key).get("tiny") or {})},
        "data": {
            "class_path": "data/sequential",
            "init_args": {
                "dataset": toy["dataset"],
                "max_len": 6,
                "batch_size": 8,
                "eval_batch_size": 64,
                "stores": toy["stores"],
            },
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("key", SERVED)
def test_fit_index_recommend(
    tmp_path: Path, toy: dict[str, object], key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--no_progress", "fit", "--config", str(_config(tmp_path, key, toy))]) == 0
    ckpt = tmp_path / "runs" / "m" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    capsys.readouterr()

    index = tmp_path / "index"
    assert main(["--no_progress", "index", "--ckpt", str(ckpt), "--out", str(index)]) == 0
    assert {"manifest.json", "index.faiss", "keys.parquet"} <= {p.name for p in index.iterdir()}
    capsys.readouterr()

    assert main(["recommend", "--ckpt", str(ckpt), "--index", str(index), "--user", "u003", "--k", "5"]) == 0
    (user,) = _json_lines(capsys.readouterr().out)
    assert user["user_id"] == "u003" and len(user["items"]) == 5 and len(set(user["items"])) == 5
    assert set(user["items"]) <= set(toy["items"])  # type: ignore[arg-type]

    history = ",".join(toy["items"][:2])  # type: ignore[index]
    assert main(["recommend", "--ckpt", str(ckpt), "--items", history, "--k", "5"]) == 0
    (new,) = _json_lines(capsys.readouterr().out)
    assert len(new["items"]) == 5 and not set(new["items"]) & set(history.split(","))
