"""The LightningCLI behind ``mmrec fit | validate | test | predict`` (imported only when one of them runs).

:class:`MMRecCLI` adds mmrec's links, defaults, messages and summary to LightningCLI; the command-line
entry (help cache, registry keys, checkpoint checks) is :mod:`mmrec.cli.lightning`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mmrec.callbacks import EpochSeed, ModelCheckpoint, ProgressLines
from mmrec.cli.common import UsageError, apply_threads, interactive
from mmrec.cli.dialect import PARSER_MODE, explain, registry_key_of
from mmrec.eval_protocol import protocol_of

VERBS = ("fit", "validate", "test", "predict")
#: metrics shown in the final summary (the others are in the metrics file)
SUMMARY_METRICS = re.compile(r"^(hr|ndcg)@\d+$|^mrr$|^bleu|^rouge")


def _progress_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip() in ("1", "true", "True")


class MMRecCLI(LightningCLI):
    """LightningCLI with mmrec's links, defaults, messages and summary."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.catalog", "model.init_args.catalog", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After `fit`, evaluate the best checkpoint on the test split and print the main metrics.",
        )
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="CPU threads (default: one per core not already busy; torch's default on an idle machine).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args``; a wrong key or value becomes one :class:`UsageError` line."""
        try:
            self.config = parser.parse_args(args)
        except UsageError:
            raise
        except Exception as e:
            if type(e).__name__ not in ("ArgumentError", "TypeError", "ValueError", "NSKeyError"):
                raise
            verb = args[0] if args and args[0] in VERBS else None
            sub = self._subcommand_parsers.get(verb) if verb else None
            raise UsageError(explain(str(e), sub or parser)) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's trainer, with every plain ``ModelCheckpoint`` made to rewrite ``last.ckpt`` each epoch.

        (:class:`mmrec.callbacks.ModelCheckpoint` only overrides two hooks and adds no state, so the
        instances configured in YAML are switched to it in place.)
        """
        trainer = super().instantiate_trainer(**kwargs)
        for cb in trainer.callbacks:
            if type(cb) is LightningModelCheckpoint:
                cb.__class__ = ModelCheckpoint
        return trainer

    def before_instantiate_classes(self) -> None:
        sub = self.config.get(self.config.get("subcommand"))
        apply_threads(sub.get("threads") if sub is not None else None)

    def _protocol_line(self) -> str:
        protocol = protocol_of(self.datamodule)
        if protocol is None:
            return f"not declared by {type(self.datamodule).__name__}"
        return protocol.describe()

    def _print_protocol(self) -> None:
        print(f"[mmrec] evaluation protocol: {self._protocol_line()}")

    def before_validate(self) -> None:
        self._print_protocol()

    def before_test(self) -> None:
        self._print_protocol()

    def before_fit(self) -> None:
        cls = type(self.model)
        key = registry_key_of(f"{cls.__module__}.{cls.__qualname__}")
        counts = getattr(self.model, "parameter_counts", None)
        if callable(counts):
            c = counts()
            share = 100.0 * c["trainable"] / max(1, c["total"])
            print(
                f"[mmrec] model {key or cls.__name__}: {c['trainable']:,} trainable parameters of "
                f"{c['total']:,} ({share:.2f}%)"
            )
        if getattr(self.model, "requires_training", True) is False:
            print("[mmrec] no training: one pass without optimizer steps, one validation, then stop")
        self._print_protocol()

    def after_fit(self) -> None:
        trainer = self.trainer
        ckpt_cb = trainer.checkpoint_callback
        # read before testing: `trainer.test(ckpt_path="best")` restores the callback's state of that time
        checkpoints = checkpoint_lines(trainer) if trainer.is_global_zero else []
        # every rank tests (the test loop is collective under DDP); rank 0's choice of checkpoint decides
        best = trainer.strategy.broadcast(getattr(ckpt_cb, "best_model_path", "") or "", src=0)
        results: list[dict[str, float]] = []
        if self.config.fit.get("test_after_fit", False):
            results = trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, verbose=False
            )
        # on every rank: trainer.log_dir is a broadcast under DDP; printed by rank 0
        summary = fit_summary(trainer, results, checkpoints, protocol=self._protocol_line())
        if trainer.is_global_zero:
            print(summary)


def checkpoint_lines(trainer: Any) -> list[str]:
    """``best checkpoint: ...`` and ``last checkpoint: ...`` lines, epochs counted from 1."""
    lines = []
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    if best:
        m = re.search(r"epoch=(\d+)", Path(best).name)
        score = getattr(ckpt_cb, "best_model_score", None)
        monitor = getattr(ckpt_cb, "monitor", None)
        detail = f"epoch {int(m.group(1)) + 1}" if m else "best epoch"  # counted from 1, as progress lines
        if score is not None and monitor:
            detail += f", {monitor} {float(score):.4f}"
        lines.append(f"[mmrec] best checkpoint: {best} ({detail})")
    last = getattr(ckpt_cb, "last_model_path", "") or ""
    if last and last != best:
        lines.append(
            f"[mmrec] last checkpoint: {last} (epoch {trainer.current_epoch}, to resume: --ckpt_path {last})"
        )
    return lines


def fit_summary(
    trainer: Any,
    results: list[dict[str, float]],
    checkpoints: list[str] | None = None,
    protocol: str | None = None,
) -> str:
    """The lines printed at the end of ``mmrec fit``: checkpoints, best epoch, main test metrics (with the
    evaluation protocol they were measured under), files.

    Args:
        trainer: the trainer after ``fit`` (and the optional test).
        results: ``trainer.test`` output (empty: no test ran).
        checkpoints: :func:`checkpoint_lines` taken before the test (default: taken now).
        protocol: the evaluation protocol's description, printed under the test metrics.
    """
    lines = list(checkpoint_lines(trainer) if checkpoints is None else checkpoints)
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    last = getattr(ckpt_cb, "last_model_path", "") or ""
    if not best and not last:
        lines.append("[mmrec] no checkpoint was written (no ModelCheckpoint callback in trainer.callbacks).")
    if results:
        values = results[0]
        main = {
            k.split("/", 1)[1]: v
            for k, v in values.items()
            if k.count("/") == 1 and SUMMARY_METRICS.match(k.split("/", 1)[1])
        }
        users = values.get("test/num_users")
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in main.items())
        lines.append(
            f"[mmrec] test ({'best' if best else 'last'} checkpoint): {shown}"
            + (f"  ({int(users):,} users)" if users is not None else "")
        )
        if protocol:
            lines.append(f"[mmrec] evaluation protocol of these metrics: {protocol}")
    log_dir = getattr(trainer, "log_dir", None)
    if log_dir:
        files = [
            p for p in (Path(log_dir) / "test_metrics.json", Path(log_dir) / "metrics.csv") if p.is_file()
        ]
        if files:
            lines.append("[mmrec] all metrics: " + ", ".join(str(p) for p in files))
    return "\n".join(lines)


class _DropTips(logging.Filter):
    """Drops Lightning's advertising lines (``💡 Tip: ... install litlogger``): one line per real event."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def run(args: list[str]) -> None:
    """Run the LightningCLI with ``args`` (``["fit", "--config", "x.yaml", ...]``)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
    trainer_defaults: dict[str, Any] = {
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    }
    callbacks: list[Any] = []
    if args and args[0] == "fit":
        callbacks.append(EpochSeed())  # a run resumed from last.ckpt reproduces the uninterrupted one
    if _progress_disabled() or not interactive():
        trainer_defaults["enable_progress_bar"] = False
        if args and args[0] == "fit":
            callbacks.append(ProgressLines())
    if callbacks:
        trainer_defaults["callbacks"] = callbacks
    with warnings.catch_warnings():
        # LightningCLI warns when `args` is given while sys.argv has arguments: here both are the same line
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        # Lightning 2.6 on torch 2.9+: an internal deprecation, nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        MMRecCLI(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=trainer_defaults,
            parser_kwargs={"parser_mode": PARSER_MODE, "exit_on_error": False, "allow_abbrev": False},
            auto_configure_optimizers=False,
        )


__all__ = ["MMRecCLI", "checkpoint_lines", "fit_summary", "run"]
