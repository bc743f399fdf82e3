"""MostPop and the no-training path of RecommenderModule (one optimizer-free epoch, one validation, stop)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from helpers import toy_dataset

from mmrec.cli import main
from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.metrics import ranking_metrics
from mmrec.models import MODELS, MostPop, create_model


def test_scores_follow_training_popularity_with_index_tie_break() -> None:
    m = MostPop(catalog={"num_items": 5, "num_users": 3})
    counts = sp.csr_matrix(
        np.array([[0, 2, 1, 0, 0, 1], [0, 1, 0, 0, 3, 0], [0, 0, 1, 0, 0, 0]], dtype=float)
    )
    m.attach_data({"train_interactions": counts})
    assert m.popularity.tolist() == [0, 3, 2, 0, 3, 1]
    s = m.score_all({"input_ids": torch.zeros(2, 3, dtype=torch.long)})
    assert torch.isinf(s[:, 0]).all() and torch.equal(s[0], s[1])  # the same list for every user
    # items 1 and 4 tie at 3 interactions: the lower index first; then 2, 5, 3 (never seen)
    assert s[0, 1:].argsort(descending=True).add(1).tolist() == [1, 4, 2, 5, 3]
    assert len(set(s[0, 1:].tolist())) == 5  # strict order: no pessimistic tie penalty for the baseline
    users = MostPop(catalog={"num_items": 5, "num_users": 3}, count="users")
    users.attach_data({"train_interactions": counts})
    assert users.popularity.tolist() == [0, 2, 2, 0, 1, 1]
    assert MostPop.requires_training is False and m.parameter_counts()["trainable"] == 0
    assert MODELS.get("baseline/mostpop") is MostPop


def test_errors_say_what_to_do() -> None:
    m = MostPop(catalog={"num_items": 3, "num_users": 1})
    with pytest.raises(RuntimeError, match="attach_data"):
        m.item_vectors()
    with pytest.raises(ValueError, match="different catalogues"):
        m.attach_data({"train_interactions": sp.csr_matrix((1, 9))})
    with pytest.raises(ValueError, match="count must be"):
        MostPop(catalog={"num_items": 3, "num_users": 1}, count="clicks")


def test_fit_is_one_epoch_without_optimizer_and_matches_direct_ranking(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=30, num_users=40, min_len=4, max_len=9)
    dm = SequentialDataModule(str(ds.path), max_len=6, batch_size=8)
    model = create_model("baseline/mostpop", catalog=dm.catalog)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/ndcg@10", mode="max")
    stop = L.pytorch.callbacks.EarlyStopping(monitor="val/ndcg@10", mode="max", patience=2)
    trainer = L.Trainer(
        max_epochs=20,
        logger=False,
        callbacks=[ckpt, stop],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 1  # one epoch although max_epochs is 20 and patience 2
    assert [type(o).__name__ for o in trainer.optimizers] == ["_MockOptimizer"]  # Lightning's "no optimizer"
    assert ckpt.best_model_path and Path(ckpt.best_model_path).is_file()  # a checkpoint of the buffers
    val = float(trainer.callback_metrics["val/ndcg@10"])
    # the same value computed by hand from training-split counts only (no validation / test leak)
    counts = np.zeros(31)
    for seq in dm.splits.train:
        for i in seq:
            counts[i] += 1
    order = sorted(range(1, 31), key=lambda i: (-counts[i], i))
    scores = torch.zeros(len(dm.splits.valid), 31)
    scores[:, order] = torch.arange(30, 0, -1, dtype=torch.float32)
    scores[:, 0] = float("-inf")
    direct = ranking_metrics(scores, torch.tensor(dm.splits.valid.targets), ks=(10,))["ndcg@10"].mean()
    assert val == pytest.approx(float(direct), abs=1e-6)
    res = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)[0]
    assert res["test/same_top10_share"] == 1.0 and res["test/num_users"] == len(dm.splits.test)
    assert model.test_per_user is not None and len(model.test_per_user["user"]) == len(dm.splits.test)


def _mostpop_config(tmp_path: Path) -> Path:
    ds = toy_dataset(tmp_path, num_items=25, num_users=30, min_len=3, max_len=7)
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": 30,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "pop"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max"},
                }
            ],
        },
        "model": {"class_path": "mmrec.models.MostPop"},
        "data": {
            "class_path": "mmrec.datamodules.sequential.SequentialDataModule",
            "init_args": {"dataset": str(ds.path), "max_len": 5, "batch_size": 8, "protocol": "masked"},
        },
    }
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_mmrec_fit_and_test_run_mostpop_and_name_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _mostpop_config(tmp_path)
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "no training: one pass without optimizer steps" in out
    assert "evaluation protocol: masked (leave-one-out by time, full ranking, history masked)" in out
    assert "[mmrec] test (best checkpoint): hr@" in out
    assert "[mmrec] evaluation protocol of these metrics: masked (leave-one-out" in out
    run = tmp_path / "runs" / "pop" / "version_0"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["protocol"]["name"] == "masked" and metrics["protocol"]["mask_history"] is True
    assert metrics["same_top10_share"] == 1.0 and 0 < metrics["coverage@10"] <= 1
    assert {"tail/ndcg@10", "cold/hr@10", "head/num_users"} <= set(metrics)
    ckpt = next((run / "checkpoints").glob("epoch=0-*.ckpt"))  # one epoch, whatever max_epochs
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    assert "evaluation protocol: masked" in capsys.readouterr().out
