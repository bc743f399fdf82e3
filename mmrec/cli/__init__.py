"""The ``mmrec`` command: one entry point dispatching to one module per command.

All command-line code of mmrec lives in this package; nothing else imports it. Each command module is
imported by name (:data:`COMMANDS`) only when its command runs, and command modules name the library
functions they call as ``"module:function"`` strings loaded after parsing, so ``mmrec --help`` and
``mmrec <command> --help`` never import torch.

Options of every command: ``--config FILE``, ``--print_config``, dotted overrides ``--a.b=v``
(:mod:`mmrec.cli.dialect`). Global options, anywhere on the line: ``--debug`` (tracebacks) and
``--no_progress`` (no progress bars at all).

Exit status: 0 success, 1 the command failed (one ``error:`` line on stderr), 2 a usage error (unknown
command, key or value), 130 interrupted.

Adding a command: write ``mmrec/cli/<name>.py`` with ``main(argv: list[str]) -> int`` and add one line to
:data:`COMMANDS`. Adding a benchmark: one line in :data:`mmrec.cli.bench.BENCHMARKS`.

Example:
    >>> main(["--version"])
    mmrec 0.1.0
    0
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from mmrec import __version__
from mmrec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    UsageError,
    did_you_mean,
    hide_progress_bars,
    interactive,
    load,
    setup_logging,
    shorten,
)

#: verb -> ("module:function" taking the remaining arguments and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (
        "mmrec.cli.lightning:fit",
        "train a model (LightningCLI): mmrec fit --config configs/sasrec_demo.yaml",
    ),
    "validate": (
        "mmrec.cli.lightning:validate",
        "evaluate on validation: mmrec validate --config ... --ckpt_path ...",
    ),
    "test": ("mmrec.cli.lightning:test", "evaluate on test: mmrec test --config ... --ckpt_path ..."),
    "predict": (
        "mmrec.cli.lightning:predict",
        "top-K lists as JSON lines: mmrec predict --config ... --ckpt_path ...",
    ),
    "data": ("mmrec.cli.data:main", "prepare / synthesise / inspect canonical datasets"),
    "embed": ("mmrec.cli.embed:embed", "precompute embedding stores with frozen encoders"),
    "shard": ("mmrec.cli.embed:shard", "pack a dataset's media into webdataset tar shards"),
    "export": ("mmrec.cli.embed:export", "export an embedding store for other recommenders"),
    "store": ("mmrec.cli.store:main", "inspect embedding stores, import .npy matrices"),
    "encoders": ("mmrec.cli.encoders:main", "list and describe the registered encoders"),
    "index": ("mmrec.cli.retrieval:index", "build a faiss index over item vectors"),
    "recommend": ("mmrec.cli.retrieval:recommend", "top-K recommendations from a checkpoint (+ index)"),
    "bench": ("mmrec.cli.bench:main", "benchmarks: mmrec bench crossdomain|quality --config ..."),
}

GLOBAL_FLAGS = ("--debug", "--no_progress")

USAGE = """usage: mmrec <command> [options]

commands:
{commands}

Every command takes --config FILE, --print_config and dotted overrides (--a.b=v); `mmrec <command> --help`
lists its options. Global options: --debug (show tracebacks), --no_progress (no progress bars).
"""


def usage() -> str:
    """The top-level help text."""
    return USAGE.format(commands="\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()))


def _pop(args: list[str], flag: str) -> bool:
    """Remove a global boolean flag from ``args``: ``--flag``, ``--flag true|false`` or ``--flag=true|false``."""
    value = False
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == flag:
            value = True
            if i + 1 < len(args) and args[i + 1].lower() in ("true", "false"):
                value = args[i + 1].lower() == "true"
                i += 1
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1].lower() in ("true", "1", "yes")
        else:
            out.append(arg)
        i += 1
    args[:] = out
    return value


def _unwrap(e: BaseException) -> BaseException:
    """The error that caused ``e`` when ``e`` only wraps it (jsonargparse builds classes inside a check of
    the value's type and reports a constructor's error as "Does not validate against any of the Union
    subtypes ... Given value: Namespace(...)")."""
    while e.__cause__ is not None and (
        "validate against any of the Union subtypes" in str(e)
        or "Problem with given class_path" in str(e)
        or (type(e).__module__ or "").startswith("jsonargparse")
    ):
        e = e.__cause__
    return e


def _message(e: BaseException) -> tuple[str, bool]:
    """``(message, expected)`` for an exception; unexpected ones name their type."""
    if isinstance(e, KeyError) and e.args:  # registry lookups: the message is the argument
        return str(e.args[0]), True
    module = type(e).__module__ or ""
    expected = (
        module.startswith("mmrec")
        or isinstance(e, (OSError, ValueError))
        or type(e).__name__ in ("MisconfigurationException", "MissingBackboneError")
    )
    text = str(e) or type(e).__name__
    return (text if expected else f"{type(e).__name__}: {text}"), expected


#: library error classes that mean "the config or the command line is wrong" (exit status 2)
USAGE_ERROR_NAMES = frozenset({"ConfigError", "RecipeError", "QualityConfigError"})


def run(verb: str, args: list[str]) -> int:
    """Run one command (no error handling: see :func:`main`)."""
    target, _ = COMMANDS[verb]
    return int(load(target)(args) or 0)


#: environment variables a command may set for the libraries it starts (restored when `main` returns, so
#: that calling `main` from Python, as the tests do, leaves the process as it was)
_ENV_SET_BY_COMMANDS = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmrec`` console script; returns the exit status."""
    saved = {k: os.environ.get(k) for k in _ENV_SET_BY_COMMANDS}
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        _close_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _close_process_group() -> None:
    """Destroy the distributed process group a DDP command left behind (Lightning does not): with gloo, a
    group still alive at interpreter exit can abort the process after its work is done ("terminate called
    without an active exception", exit -6; seen once in tests/test_distributed.py on a fresh clone). torch is
    not imported for commands that did not load it."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _main(args: list[str]) -> int:
    debug = _pop(args, "--debug")
    # progress bars are for terminals: in a log file or a pipe they are noise (e.g. the weight-loading bar
    # of transformers); `mmrec fit` prints progress lines there instead
    if _pop(args, "--no_progress") or not interactive():
        hide_progress_bars()
    setup_logging(debug)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return EXIT_OK
    if args[0] in ("-V", "--version"):
        print(f"mmrec {__version__}")
        return EXIT_OK
    verb = args[0]
    if verb not in COMMANDS:
        print(
            f"error: unknown command {shorten(verb)!r}.{did_you_mean(verb, COMMANDS)} "
            "`mmrec --help` lists the commands.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        code = run(verb, args[1:])
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return code
    except SystemExit as exit_request:  # --help / --print_config (0), or a library that exits on its own
        return (
            exit_request.code
            if isinstance(exit_request.code, int)
            else (EXIT_OK if exit_request.code is None else EXIT_FAILED)
        )
    except BrokenPipeError:  # `mmrec ... | head`: the reader left; stop quietly as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as raised:
        if debug:
            traceback.print_exc()
        e = _unwrap(raised)
        usage_error = isinstance(e, UsageError) or type(e).__name__ in USAGE_ERROR_NAMES
        if isinstance(e, (UsageError, CommandError)):
            text, expected = str(e), True
        else:
            text, expected = _message(e)
        print(f"error: {shorten(text)}", file=sys.stderr)
        if not expected and not debug:
            print("(an unexpected error: `--debug` shows the traceback)", file=sys.stderr)
        return EXIT_USAGE if usage_error else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
