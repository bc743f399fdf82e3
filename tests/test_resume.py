"""Resuming `mmrec fit` from last.ckpt: last.ckpt is the last epoch, and the resumed run reproduces the
uninterrupted one (same validation metrics per epoch, same final weights)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from helpers import toy_dataset
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from mmrec.callbacks import EpochSeed, ModelCheckpoint, epoch_seed
from mmrec.cli import main
from mmrec.cli.trainer import MMRecCLI
from mmrec.datamodules.sequential import LengthGroupedSampler


def _config(tmp_path: Path, dataset: Path, name: str, checkpoint_class: str) -> Path:
    cfg = {
        "seed_everything": 3,
        "trainer": {
            "max_epochs": 3,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": name},
            },
            # mode "min": the first epoch is the best one, so last.ckpt must NOT be a copy of the best
            "callbacks": [
                {
                    "class_path": checkpoint_class,
                    "init_args": {"monitor": "val/ndcg@10", "mode": "min", "save_last": True},
                }
            ],
        },
        "model": {
            "class_path": "sequential/sasrec",
            # dropout and BCE negatives: both draw from the global generators during training
            "init_args": {"dim": 8, "num_layers": 1, "num_heads": 1, "dropout": 0.5, "loss": "bce"},
        },
        "data": {
            "class_path": "data/sequential",
            "init_args": {"dataset": str(dataset), "max_len": 5, "batch_size": 8, "pool_batches": 2},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _val_metrics(run: Path) -> dict[int, tuple[float, float]]:
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/ndcg@10")]
    return {int(r["epoch"]): (float(r["val/ndcg@10"]), float(r["val/hr@10"])) for r in rows}


@pytest.mark.parametrize(
    "checkpoint_class", ["mmrec.callbacks.ModelCheckpoint", "lightning.pytorch.callbacks.ModelCheckpoint"]
)
def test_resumed_run_reproduces_uninterrupted_run(tmp_path: Path, checkpoint_class: str) -> None:
    ds = toy_dataset(tmp_path, num_items=30, num_users=40, min_len=4, max_len=9)

    straight = _config(tmp_path, ds.path, "straight", checkpoint_class)
    assert main(["fit", "--config", str(straight)]) == 0
    straight_run = tmp_path / "runs" / "straight" / "version_0"

    stopped = _config(tmp_path, ds.path, "stopped", checkpoint_class)
    assert main(["fit", "--config", str(stopped), "--trainer.max_epochs", "2"]) == 0
    first_run = tmp_path / "runs" / "stopped" / "version_0"
    last = first_run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1  # the 2nd epoch, not the best (1st) one
    assert main(["fit", "--config", str(stopped), "--ckpt_path", str(last)]) == 0
    resumed_run = tmp_path / "runs" / "stopped" / "version_1"

    # last.ckpt is rewritten after every epoch, although only the first epoch was ever the best
    straight_ckpts = straight_run / "checkpoints"
    best = [p for p in straight_ckpts.glob("*.ckpt") if p.name != "last.ckpt"]
    assert [p.name.split("-")[0] for p in best] == ["epoch=0"]
    final = torch.load(straight_ckpts / "last.ckpt", weights_only=False)
    assert final["epoch"] == 2

    expected = _val_metrics(straight_run)
    got = {**_val_metrics(first_run), **_val_metrics(resumed_run)}
    assert sorted(expected) == [0, 1, 2] and sorted(_val_metrics(resumed_run)) == [2]
    assert got == expected
    # training moved the metrics: the comparison means something
    assert len(set(expected.values())) > 1

    resumed = torch.load(resumed_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == 2
    for k, v in final["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k


def test_plain_lightning_checkpoint_is_upgraded_and_epoch_seed_is_added(tmp_path: Path) -> None:
    """`mmrec fit` switches Lightning's ModelCheckpoint to mmrec's and always adds EpochSeed."""
    seen: dict[str, list[type]] = {}
    original = MMRecCLI.before_fit

    def spy(self: MMRecCLI) -> None:
        seen["callbacks"] = [type(c) for c in self.trainer.callbacks]
        raise SystemExit(0)

    ds = toy_dataset(tmp_path, num_items=10, num_users=8, min_len=3, max_len=4)
    cfg = _config(tmp_path, ds.path, "spy", "lightning.pytorch.callbacks.ModelCheckpoint")
    MMRecCLI.before_fit = spy  # type: ignore[method-assign]
    try:
        main(["fit", "--config", str(cfg)])
    finally:
        MMRecCLI.before_fit = original  # type: ignore[method-assign]
    assert ModelCheckpoint in seen["callbacks"] and LightningModelCheckpoint not in seen["callbacks"]
    assert EpochSeed in seen["callbacks"]


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    lengths = [1 + (i * 7) % 5 for i in range(50)]
    fresh = LengthGroupedSampler(lengths, batch_size=4, seed=1, pool_batches=2)
    orders = [list(fresh) for _ in range(3)]
    assert orders[0] != orders[1] != orders[2]
    jumped = LengthGroupedSampler(lengths, batch_size=4, seed=1, pool_batches=2)
    jumped.set_epoch(2)  # as Lightning does when it resumes at epoch 2
    assert list(jumped) == orders[2]
    assert sorted(orders[2]) == list(range(50))


def test_epoch_seed_reseeds_from_seed_and_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Trainer:
        current_epoch = 4
        train_dataloader = None

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    cb = EpochSeed()
    torch.manual_seed(123)
    cb.on_train_epoch_start(_Trainer(), None)  # type: ignore[arg-type]
    a = torch.rand(3)
    torch.manual_seed(999)
    cb.on_train_epoch_start(_Trainer(), None)  # type: ignore[arg-type]
    assert torch.equal(a, torch.rand(3))
    torch.manual_seed(epoch_seed(7, 4))
    assert torch.equal(a, torch.rand(3))
    monkeypatch.delenv("PL_GLOBAL_SEED")
    torch.manual_seed(5)
    b = torch.rand(1)
    torch.manual_seed(5)
    cb.on_train_epoch_start(_Trainer(), None)  # type: ignore[arg-type]
    assert torch.equal(b, torch.rand(1))  # no seed anywhere: the generators are left alone


@pytest.mark.slow
def test_resume_on_the_demo_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    """The same on the shipped demo catalogue and recipe (configs/sasrec_demo.yaml, 3 epochs)."""
    repo = Path(__file__).resolve().parents[1]
    config = str(repo / "configs" / "sasrec_demo.yaml")
    common = [
        "--config", config,
        "--data.init_args.dataset", str(repo / "assets" / "demo"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--test_after_fit", "false",
    ]  # fmt: skip
    assert (
        main(["fit", *common, "--trainer.logger.init_args.name", "straight", "--trainer.max_epochs", "3"])
        == 0
    )
    assert (
        main(["fit", *common, "--trainer.logger.init_args.name", "stopped", "--trainer.max_epochs", "2"]) == 0
    )
    last = tmp_path / "runs" / "stopped" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    resume = [
        "--trainer.logger.init_args.name",
        "stopped",
        "--trainer.max_epochs",
        "3",
        "--ckpt_path",
        str(last),
    ]
    assert main(["fit", *common, *resume]) == 0
    expected = _val_metrics(tmp_path / "runs" / "straight" / "version_0")
    got = {
        **_val_metrics(tmp_path / "runs" / "stopped" / "version_0"),
        **_val_metrics(tmp_path / "runs" / "stopped" / "version_1"),
    }
    assert sorted(expected) == [0, 1, 2] and got == expected and len(set(expected.values())) > 1
