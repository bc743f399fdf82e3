"""Optimizer and LR scheduler injected into models (``OptimizerCallable`` / ``LRSchedulerCallable``).

Default: ``AdamW(lr, weight_decay)`` as before; in Python a callable; in YAML ``model.init_args.optimizer`` /
``lr_scheduler`` as ``class_path`` / ``init_args`` through ``mmrec fit``. The callables never go into the
checkpoint's hyper-parameters (checkpoints load with ``weights_only=True``).
"""

from __future__ import annotations

import csv
import functools
import inspect
from pathlib import Path

import pytest
import torch
import yaml
from helpers import toy_dataset

from mmrec.cli import main
from mmrec.models import MODELS
from mmrec.models.base import RecommenderModule

CATALOG = {"num_items": 12, "num_users": 5}


def _sasrec(**kwargs: object) -> RecommenderModule:
    return MODELS.get("sequential/sasrec")(catalog=CATALOG, dim=8, num_layers=1, num_heads=1, **kwargs)


def test_default_is_adamw_with_lr_and_weight_decay() -> None:
    opt = _sasrec(lr=0.02, weight_decay=0.1).configure_optimizers()
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["lr"] == 0.02 and opt.defaults["weight_decay"] == 0.1


def test_injected_optimizer_and_scheduler() -> None:
    model = _sasrec(
        optimizer=functools.partial(torch.optim.SGD, lr=0.3, momentum=0.5),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    out = model.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert type(opt) is torch.optim.SGD and opt.defaults["lr"] == 0.3 and opt.defaults["momentum"] == 0.5
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.optimizer is opt
    assert out["lr_scheduler"]["interval"] == "epoch"
    # only trainable parameters reach the optimizer
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    # training callables are not hyper-parameters (a partial would not load with weights_only=True)
    assert "optimizer" not in model.hparams and "lr_scheduler" not in model.hparams
    assert model.hparams["dim"] == 8


def test_scheduler_alone_uses_the_default_adamw() -> None:
    out = _sasrec(
        lr=0.01, lr_scheduler=functools.partial(torch.optim.lr_scheduler.ConstantLR)
    ).configure_optimizers()
    assert type(out["optimizer"]) is torch.optim.AdamW and out["optimizer"].defaults["lr"] == 0.01


def test_not_a_callable_is_an_error_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"optimizer must be a callable.*class_path: torch.optim.SGD"):
        _sasrec(optimizer="sgd")


def test_every_trainable_registered_model_takes_the_callables() -> None:
    """Each model that learns by gradient descent accepts and forwards ``optimizer`` / ``lr_scheduler``."""
    missing = []
    for key in MODELS.list():
        cls = MODELS.get(key)
        if not isinstance(cls, type) or not issubclass(cls, RecommenderModule) or not cls.requires_training:
            continue
        if key.startswith("vip5/"):  # VIP5 has its own warm-up schedule (mmrec/models/vip5*.py)
            continue
        params = inspect.signature(cls.__init__).parameters
        if "optimizer" not in params or "lr_scheduler" not in params:
            missing.append(key)
    assert not missing, f"models without optimizer / lr_scheduler arguments: {missing}"


def test_yaml_optimizer_and_scheduler_through_mmrec_fit(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=20, num_users=16, min_len=3, max_len=6)
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "opt"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                    "init_args": {"logging_interval": "epoch"},
                },
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True},
                },
            ],
        },
        "model": {
            "class_path": "sequential/sasrec",
            "init_args": {
                "dim": 8,
                "num_layers": 1,
                "num_heads": 1,
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.9}},
                "lr_scheduler": {
                    "class_path": "torch.optim.lr_scheduler.StepLR",
                    "init_args": {"step_size": 1, "gamma": 0.5},
                },
            },
        },
        "data": {
            "class_path": "data/sequential",
            "init_args": {"dataset": str(ds.path), "max_len": 5, "batch_size": 8},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    run = tmp_path / "runs" / "opt" / "version_0"
    with open(run / "metrics.csv", newline="") as f:
        lrs = [float(r["lr-SGD"]) for r in csv.DictReader(f) if r.get("lr-SGD")]
    assert lrs == pytest.approx([0.2, 0.1])  # SGD from the YAML, halved by StepLR after epoch 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.SGD"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer" not in ckpt["hyper_parameters"] and ckpt["hyper_parameters"]["dim"] == 8
    assert ckpt["optimizer_states"][0]["param_groups"][0]["momentum"] == 0.9
