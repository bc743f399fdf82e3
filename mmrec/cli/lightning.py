"""``mmrec fit | validate | test | predict --config <yaml>``: the LightningCLI verbs.

Configs use ``class_path`` / ``init_args`` for the model and the datamodule; ``class_path`` may be a
registry key (``sequential/sasrec``, ``data/sequential``) or a dotted class path, and ``--model
sequential/sasrec`` works on the command line too. The model's ``catalog`` (sizes, feature dims) is linked
from the instantiated datamodule, so configs never repeat the number of items.

mmrec's additions to LightningCLI (:mod:`mmrec.cli.trainer`, imported only when a verb runs):

- ``test_after_fit: true`` tests the best checkpoint right after ``fit``;
- ``threads`` (``--threads N``): CPU threads (default: :func:`mmrec.cli.common.choose_threads`);
- CSV logging under ``runs/`` by default; progress bars on a terminal, one-line progress
  (:class:`mmrec.callbacks.ProgressLines`) when stdout is a file or a pipe, nothing with ``--no_progress``;
- after ``fit``, a short summary: best checkpoint and epoch, the main test metrics once, where the full
  metrics file is;
- errors as one line (an unknown key inside ``init_args`` gets a "did you mean"); ``--debug`` for tracebacks;
- ``mmrec <verb> --help`` is cached after its first run (building it imports Lightning: seconds).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import os
import sys
from pathlib import Path

from mmrec import __version__
from mmrec.cli.common import UsageError, check_checkpoint_file, load
from mmrec.cli.dialect import rewrite_class_args, split_indexed

RUN = "mmrec.cli.trainer:run"


# --------------------------------------------------------------------------------------------- help cache
def _help_cache_path(args: list[str]) -> Path:
    versions = []
    for dist in ("lightning", "jsonargparse", "torch"):
        try:
            versions.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}==?")
    sources = [Path(__file__), Path(__file__).with_name("trainer.py"), Path(__file__).with_name("dialect.py")]
    digest = hashlib.sha256()
    for part in (__version__, sys.executable, *versions, *args, os.environ.get("COLUMNS", "")):
        digest.update(part.encode() + b"\0")
    for src in sources:
        digest.update(src.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmrec" / "help"
    return root / f"{args[0]}-{digest.hexdigest()[:16]}.txt"


def _help(args: list[str]) -> int:
    """``mmrec <verb> --help``: Lightning's full help, built once and then read from a cache file."""
    cache = _help_cache_path(args)
    if cache.is_file():
        sys.stdout.write(cache.read_text(encoding="utf-8"))
        return 0
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            load(RUN)(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
    text = out.getvalue()
    sys.stdout.write(text)
    if code == 0 and text:
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, cache)
    return code


def warm_help() -> None:
    """Build the help cache of every Lightning verb once (``make`` runs this after installing), so that
    ``mmrec fit --help`` and its siblings answer in well under a second from then on."""
    for verb in ("fit", "validate", "test", "predict"):
        with contextlib.redirect_stdout(io.StringIO()):
            _help([verb, "--help"])


# --------------------------------------------------------------------------------------------- running
def _check_ckpt_path(args: list[str]) -> None:
    for i, arg in enumerate(args):
        value = None
        if arg == "--ckpt_path" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        if (
            value
            and value not in ("best", "last", "hpc", "null", "None")
            and not value.startswith("registry")
        ):
            check_checkpoint_file(value, "--ckpt_path")


def run_lightning(args: list[str]) -> int:
    """Run a LightningCLI verb with ``args`` (``["fit", "--config", "x.yaml", ...]``); returns 0."""
    if len(args) == 2 and args[1] in ("-h", "--help"):
        return _help(args)
    args = [args[0], *rewrite_class_args(args[1:])]
    _, indexed = split_indexed(args[1:])
    if indexed:
        path = indexed[0][0]
        keys = path.split(".")
        listed = ".".join(keys[: next(i for i, k in enumerate(keys) if k.isdigit())])
        raise UsageError(
            f"--{path}: `mmrec {args[0]}` cannot set a list item by index; change `{listed}` in a config "
            f"file passed with --config (or append an entry with --{listed}+=...)."
        )
    _check_ckpt_path(args)
    load(RUN)(args)
    return 0


def fit(argv: list[str]) -> int:
    """``mmrec fit``."""
    return run_lightning(["fit", *argv])


def validate(argv: list[str]) -> int:
    """``mmrec validate``."""
    return run_lightning(["validate", *argv])


def test(argv: list[str]) -> int:
    """``mmrec test``."""
    return run_lightning(["test", *argv])


def predict(argv: list[str]) -> int:
    """``mmrec predict``."""
    return run_lightning(["predict", *argv])


__all__ = ["fit", "predict", "run_lightning", "test", "validate"]
