"""What every ``mmrec`` command shares: errors, lazy loading, short messages, threads and progress settings.

- :class:`UsageError` (exit 2) and :class:`CommandError` (exit 1): raised by command code; the dispatcher
  (:func:`mmrec.cli.main`) prints ``error: <message>`` once, without a traceback unless ``--debug``.
- :func:`load`: ``"module:attr"`` -> the object, imported on first use. Commands name the library
  functions they run this way, so that ``mmrec <command> --help`` never imports torch or Lightning.
- :func:`shorten` / :func:`did_you_mean`: messages stay readable whatever the user typed.
- :func:`choose_threads`: the thread rule of every computing command (``--threads`` / config ``threads``).
- :func:`hide_progress_bars`: ``--no_progress`` for every library that draws bars (tqdm, Hugging Face).

Example:
    >>> shorten("unknown user " + "x" * 5000)[:30]
    'unknown user xxxxxxxxxxxxxxxxx'
    >>> len(shorten("x" * 5000)) < 200
    True
    >>> did_you_mean("minilmx", ["minilm", "t5-small"])
    " Did you mean 'minilm'?"
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: longest run of non-space characters echoed in a message (ids, values, file contents...)
MAX_TOKEN = 120


class UsageError(Exception):
    """The command line or config is wrong (unknown key, bad value, missing argument): exit status 2."""


class CommandError(Exception):
    """The command cannot do its job with what it was given (missing file, unknown id): exit status 1."""


def load(path: str) -> Any:
    """The object named ``"package.module:attr"`` (the module is imported now, not at start-up).

    Example:
        >>> load("os.path:join")("a", "b")
        'a/b'
    """
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def shorten(text: str, limit: int = MAX_TOKEN) -> str:
    """``text`` with every run of more than ``limit`` non-space characters cut in the middle.

    A 100k-character id in an error message becomes ``xxxx…(100000 characters)…xxxx``.
    """

    def cut(m: re.Match[str]) -> str:
        s = m.group(0)
        keep = max(8, limit // 2 - 12)
        return f"{s[:keep]}…({len(s)} characters)…{s[-keep:]}"

    text = re.sub(rf"\S{{{limit + 1},}}", cut, str(text))
    if len(text) > 40 * limit:  # many long lines (a dumped value): keep the start and the end
        text = text[: 20 * limit] + f"\n… ({len(text)} characters in all) …\n" + text[-10 * limit :]
    return text


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices`` (empty when none is close)."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=cutoff)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def listing(choices: Iterable[str], limit: int = 12) -> str:
    """``a, b, c`` (the first ``limit`` of them, then ``... (N more)``)."""
    items = [str(c) for c in choices]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --------------------------------------------------------------------------------------------- logging
_LOG_FORMAT = "[%(name)s] %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be replaced after set-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(debug: bool = False) -> None:
    """``[mmrec...] message`` lines on stderr for mmrec's loggers; other libraries keep their own handlers.

    The root logger is left alone: Lightning installs its own handler on ``lightning.pytorch`` and stops
    propagation only when the root has none, so a root handler here would print each of its lines twice.
    """
    logger = logging.getLogger("mmrec")
    if not any(getattr(h, "_mmrec", False) for h in logger.handlers):
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler._mmrec = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def say(message: str) -> None:
    """One ``[mmrec] ...`` line on stderr (choices and notes; results go to stdout)."""
    print(f"[mmrec] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- threads
def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(requested: int | None) -> tuple[int | None, str]:
    """The number of CPU threads for a computing command, and why.

    The rule, in order:

    1. ``--threads N`` (config key ``threads``) when given;
    2. the ``OMP_NUM_THREADS`` environment variable when set;
    3. otherwise the machine decides: with ``cores`` usable cores and a 1-minute load average ``load``
       (other jobs already running), ``busy = round(load)``. An idle machine (``busy == 0``) keeps
       torch's default (``None`` is returned); a busy one gets the cores nobody else uses,
       ``max(1, cores - busy)`` — so one thread per process when other jobs already fill the cores.
       Oversubscribed cores made a training epoch 2.6x slower than one thread on a shared 2-core machine.

    Returns:
        ``(threads or None, reason)``.

    Raises:
        UsageError: ``requested`` is not a positive integer.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UsageError(f"threads must be a positive integer; got {requested!r}.")
        return requested, "requested"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = usable_cores()
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform: torch's default
        return None, f"{cores} cores, load unknown"
    busy = math.floor(load1 + 0.5)
    if busy <= 0:
        return None, f"{cores} cores idle (load {load1:.1f})"
    return max(1, cores - busy), f"{cores} cores, load {load1:.1f}: other jobs share them"


def apply_threads(requested: int | None, *, announce: bool = True) -> int | None:
    """Apply :func:`choose_threads` to torch (and to every library started after this call).

    Sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for libraries imported later and calls
    ``torch.set_num_threads`` when torch is already loaded; prints the choice once on stderr.

    Returns:
        the thread count applied, or ``None`` for torch's default.
    """
    threads, why = choose_threads(requested)
    torch = sys.modules.get("torch")
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
        if torch is not None:
            torch.set_num_threads(threads)
    if announce:
        shown = str(threads) if threads is not None else "torch's default"
        hint = "" if requested is not None else "; --threads N to choose"
        say(f"threads: {shown} ({why}{hint})")
    return threads


# --------------------------------------------------------------------------------------------- progress
def hide_progress_bars() -> None:
    """Hide every progress bar: tqdm's (``TQDM_DISABLE``), Hugging Face's weight and download bars."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and hasattr(hub, "disable_progress_bars"):
        hub.disable_progress_bars()
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is not None and hasattr(tf_logging, "disable_progress_bar"):
        tf_logging.disable_progress_bar()


def interactive() -> bool:
    """True when stdout is a terminal (progress bars), False for logs and pipes (progress lines)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------- checkpoints
def check_checkpoint_file(path: str, option: str = "--ckpt") -> None:
    """Refuse, with a message, a file that cannot be a Lightning checkpoint (before torch reads it).

    ``torch.save`` (and so Lightning) writes zip archives; anything else, a plain pickle included, is
    refused here with what to pass instead (a pickle is never unpickled: that would run its code).

    Raises:
        CommandError: the file is missing, a folder, or not a zip archive.
    """
    import zipfile

    p = os.path.expanduser(path)
    if not os.path.exists(p):
        raise CommandError(
            f"{option} {shorten(path)} does not exist; pass a .ckpt file written by `mmrec fit`."
        )
    if os.path.isdir(p):
        raise CommandError(
            f"{option} {shorten(path)} is a folder; pass a .ckpt file written by `mmrec fit` "
            "(e.g. <run>/checkpoints/last.ckpt)."
        )
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            head = f.read(2)
        what = "a plain pickle" if head[:1] == b"\x80" else "not a torch zip archive"
        raise CommandError(
            f"{option} {shorten(path)} is not a Lightning checkpoint ({what}). Pass a .ckpt file written by "
            "`mmrec fit` (under <run>/checkpoints/); pickles are never loaded because unpickling runs code."
        )
