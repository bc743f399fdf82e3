"""Distributed training and evaluation give the answers of one process (issue 14, item 1).

Unit level: the samplers shard by whole batches (each evaluation row once, no padding; training batches
disjoint, same step count on every rank, an order fixed by seed + epoch) and the evaluator's sums do not
depend on how users are split. End to end: ``mmrec fit`` under ``--trainer.strategy ddp --trainer.devices 2``
(2 CPU processes, gloo) trains with the length-grouped sampler, stops early on every rank, and tests the best
checkpoint with metrics identical, bit for bit, to ``mmrec test`` of the same checkpoint in one process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import toy_dataset

from mmrec.cli import main
from mmrec.datamodules.sampling import EvalShardSampler, LengthGroupedSampler
from mmrec.metrics import FullRankingEvaluator


@pytest.mark.parametrize("n, bs, world", [(10, 3, 2), (61, 8, 2), (7, 2, 3), (5, 8, 2), (64, 8, 4)])
def test_eval_shards_cover_every_row_once_in_whole_batches(n: int, bs: int, world: int) -> None:
    shards = [list(EvalShardSampler(n, bs, num_replicas=world, rank=r)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # once each, in order, no padding
    assert [len(EvalShardSampler(n, bs, num_replicas=world, rank=r)) for r in range(world)] == [
        len(s) for s in shards
    ]
    one_process = [tuple(range(i, min(i + bs, n))) for i in range(0, n, bs)]
    per_rank = [tuple(s[i : i + bs]) for s in shards for i in range(0, len(s), bs)]
    assert per_rank == one_process  # the DataLoader cuts the same batches as in one process


@pytest.mark.parametrize("n, bs, world", [(103, 8, 2), (96, 8, 2), (17, 4, 3), (3, 4, 2)])
def test_length_grouped_shards_are_disjoint_batches_with_equal_steps(n: int, bs: int, world: int) -> None:
    lengths = np.random.default_rng(0).integers(1, 50, size=n)
    samplers = [
        LengthGroupedSampler(lengths, bs, seed=3, pool_batches=4, num_replicas=world, rank=r)
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(2)
    streams = [list(s) for s in samplers]
    assert [len(s) for s in streams] == [len(s) for s in samplers]
    batches = [[tuple(st[i : i + bs]) for i in range(0, len(st), bs)] for st in streams]
    assert len({len(b) for b in batches}) == 1  # every rank runs the same number of steps
    global_batches = [tuple(b.tolist()) for b in samplers[0].batches(2)]
    # each DataLoader batch is one of the global length-grouped batches; together they cover all of them
    assert all(b in global_batches for bs_ in batches for b in bs_)
    assert set(global_batches) == {b for bs_ in batches for b in bs_}
    seen = sorted(i for st in streams for i in st)
    assert set(seen) == set(range(n))
    pad = world * len(batches[0]) - len(global_batches)  # batches repeated so that ranks have equal steps
    assert len(seen) - n == sum(len(global_batches[i]) for i in range(pad))


def test_length_grouped_order_follows_set_epoch() -> None:
    lengths = np.arange(40) % 7
    a = LengthGroupedSampler(lengths, 4, seed=1)
    first, second = list(a), list(a)  # without set_epoch, each iteration is the next epoch
    assert first != second and sorted(first) == sorted(second) == list(range(40))
    resumed = LengthGroupedSampler(lengths, 4, seed=1)
    resumed.set_epoch(1)  # what Lightning does when a run resumes at epoch 1
    assert list(resumed) == second
    # consecutive indices of a batch have similar lengths (pools sorted by length)
    pooled = LengthGroupedSampler(np.random.default_rng(0).integers(0, 100, 400), 20, pool_batches=20)
    spread = np.mean([np.ptp(pooled.lengths[b]) for b in pooled.batches(0)])
    assert spread < 20


def test_evaluator_sums_do_not_depend_on_batches_or_ranks() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(57, 31, generator=g)
    targets = torch.randint(1, 31, (57, 1), generator=g)
    whole = FullRankingEvaluator(ks=(5, 10), ignore_columns=(0,))
    whole.update(scores, targets)
    parts = []
    for cut in ((0, 7), (7, 30), (30, 57)):  # three "ranks" of unequal size
        ev = FullRankingEvaluator(ks=(5, 10), ignore_columns=(0,))
        for s in range(cut[0], cut[1], 4):
            e = min(s + 4, cut[1])
            ev.update(scores[s:e], targets[s:e])
        parts.append(ev)
    merged = FullRankingEvaluator(ks=(5, 10), ignore_columns=(0,))
    merged.update(scores[:0], targets[:0])  # no rows: only marks it updated
    merged.sums = sum((p.sums for p in reversed(parts)), torch.zeros_like(parts[0].sums))
    merged.num_users = sum(p.num_users for p in parts)
    assert merged.compute() == whole.compute()  # exactly, in any order of reduction
    assert whole.compute()["ndcg@10"] == pytest.approx(
        float(np.mean([m for m in _ndcg10(scores, targets)])), abs=1e-7
    )


def _ndcg10(scores: torch.Tensor, targets: torch.Tensor) -> list[float]:
    out = []
    for row, t in zip(scores, targets[:, 0]):
        rank = int((row[1:] >= row[t]).sum())
        out.append(1.0 / np.log2(rank + 1) if rank <= 10 else 0.0)
    return out


def _config(tmp_path: Path) -> Path:
    ds = toy_dataset(tmp_path, num_items=40, num_users=61, min_len=3, max_len=9)
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": 6,
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
                },
                {
                    "class_path": "lightning.pytorch.callbacks.EarlyStopping",
                    # stops as soon as val/ndcg@10 does not improve by 0.5 (i.e. after epoch 2)
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "patience": 0, "min_delta": 0.5},
                },
            ],
        },
        "model": {
            "class_path": "sequential/sasrec",
            "init_args": {"dim": 8, "num_layers": 1, "num_heads": 1},
        },
        "data": {
            "class_path": "data/sequential",
            # 61 users in 8 evaluation batches of 8 (the last short): 4 per rank
            "init_args": {"dataset": str(ds.path), "max_len": 6, "batch_size": 8, "eval_batch_size": 8},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # two DDP processes start torch + Lightning: ~20 s of CPU
def test_ddp_two_processes_train_stop_together_and_test_like_one(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "mmrec.cli", "fit", "--config", str(cfg), *ddp],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "toy" / "version_0"
    ddp_metrics = json.loads((run / "test_metrics.json").read_text())
    assert ddp_metrics["num_users"] == 61  # each user once (a padding sampler gives 62)
    epochs = {int(r["epoch"]) for r in _csv_rows(run / "metrics.csv") if r.get("val/ndcg@10")}
    assert epochs == {0, 1}  # early stopping ended both ranks after epoch 2 (else DDP would hang)
    best = next(c for c in (run / "checkpoints").glob("*.ckpt") if c.name != "last.ckpt")

    assert main(["test", "--config", str(cfg), "--ckpt_path", str(best)]) == 0
    one = json.loads((tmp_path / "runs" / "toy" / "version_1" / "test_metrics.json").read_text())
    assert one == ddp_metrics  # identical: every metric, num_users, coverage, head / tail / cold


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
