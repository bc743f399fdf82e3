"""LightningCLI for ``mmrec fit | validate | test | predict --config <yaml>``.

Configs use ``class_path`` / ``init_args`` for the model and the datamodule. The model's ``catalog``
(sizes, feature dims) is linked from the instantiated datamodule, so configs never repeat the number of
items. Defaults: CSV logging under ``runs/``, a best-on-validation checkpoint, and (with
``test_after_fit: true``) a test run of the best checkpoint right after fitting. ``fit``, ``validate`` and
``test`` print the evaluation protocol of the datamodule (:mod:`mmrec.eval_protocol`) before they run, and
the printed test metrics name it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mmrec.eval_protocol import protocol_of

log = logging.getLogger("mmrec")


class MMRecCLI(LightningCLI):
    """LightningCLI with mmrec's links and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.catalog", "model.init_args.catalog", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After `fit`, evaluate the best checkpoint on the test split and print the metrics.",
        )

    def _protocol_line(self) -> str:
        protocol = protocol_of(self.datamodule)
        if protocol is None:
            return f"not declared by {type(self.datamodule).__name__}"
        return protocol.describe()

    def _print_protocol(self) -> None:
        print(f"[mmrec] evaluation protocol: {self._protocol_line()}")

    def before_fit(self) -> None:
        counts = getattr(self.model, "parameter_counts", None)
        if callable(counts):
            c = counts()
            share = 100.0 * c["trainable"] / max(1, c["total"])
            print(f"[mmrec] parameters: {c['trainable']:,} trainable of {c['total']:,} ({share:.2f}%)")
        if getattr(self.model, "requires_training", True) is False:
            print("[mmrec] no training: one pass without optimizer steps, one validation, then stop")
        self._print_protocol()

    def before_validate(self) -> None:
        self._print_protocol()

    def before_test(self) -> None:
        self._print_protocol()

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit", False):
            return
        ckpt = (
            "best"
            if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path
            else None
        )
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        if results and self.trainer.is_global_zero:
            metrics = {k: round(float(v), 6) for k, v in results[0].items()}
            print(f"[mmrec] test metrics (best checkpoint by validation; protocol {self._protocol_line()}):")
            print(json.dumps(metrics, indent=2))


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``predict`` output as JSON lines: ``{"user_id", "items": [item ids], "scores": [...]}``.

    Args:
        output: file to write (parent folders are created).
    """

    def __init__(self, output: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self, trainer: Any, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        dm: LightningDataModule | None = trainer.datamodule
        user_ids = getattr(dm, "user_ids", None)
        item_ids = getattr(dm, "item_ids", None)
        path = Path(self.output).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for batch in predictions:
                users = batch["user"].tolist()
                items = batch["items"].tolist()
                scores = batch["scores"].to(torch.float32).tolist()
                for u, its, scs in zip(users, items, scores):
                    rec = {
                        "user_id": user_ids[u] if user_ids else u,
                        "items": [item_ids[i - 1] if item_ids else i for i in its],
                        "scores": [round(s, 6) for s in scs],
                    }
                    f.write(json.dumps(rec) + "\n")
                    n += 1
        print(f"[mmrec] wrote {n} recommendation lists to {path}")


def run_lightning_cli(args: list[str]) -> None:
    """Run the LightningCLI with ``args`` (``["fit", "--config", "x.yaml", ...]``)."""
    MMRecCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs"},
            },
        },
        auto_configure_optimizers=False,
    )
