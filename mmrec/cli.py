"""The ``mmrec`` command: one entry point dispatching to each job's own parser.

``mmrec fit | validate | test | predict`` run the LightningCLI (``--config <yaml>``); ``mmrec data``
prepares canonical datasets; the other verbs live in their own modules and are imported only when used,
so ``mmrec --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from mmrec import __version__

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")

# verb -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("mmrec.datamodules.data_cli", "main", "prepare / synthesise / inspect canonical datasets"),
    "embed": ("mmrec.embed_cli", "main", "precompute embedding stores with frozen encoders"),
    "shard": ("mmrec.embed_cli", "shard_main", "pack a dataset's media into webdataset tar shards"),
    "export": ("mmrec.embed_cli", "export_main", "export an embedding store for other recommenders"),
    "store": ("mmrec.store.cli", "main", "inspect embedding stores, import .npy matrices"),
    "encoders": ("mmrec.encoders.cli", "main", "list registered encoders"),
    "index": ("mmrec.retrieval.cli", "index_main", "build a faiss index over item vectors"),
    "recommend": ("mmrec.retrieval.cli", "recommend_main", "top-K recommendations from a checkpoint + index"),
    "bench": ("mmrec.bench.cli", "main", "benchmarks (e.g. `mmrec bench crossdomain --config ...`)"),
}

USAGE = """usage: mmrec <command> [options]

Training and evaluation (LightningCLI, see `mmrec fit --help`):
  fit        train a model:            mmrec fit --config configs/vip5_demo.yaml
  validate   evaluate on validation:   mmrec validate --config ... --ckpt_path ...
  test       evaluate on test:         mmrec test --config ... --ckpt_path ...
  predict    top-K lists as JSON lines: mmrec predict --config ... --ckpt_path ...

Other commands:
{others}

`mmrec <command> --help` for the options of one command.
"""


def _usage() -> str:
    others = "\n".join(f"  {name:<10} {helptext}" for name, (_, _, helptext) in COMMANDS.items())
    return USAGE.format(others=others)


def _load(module: str, func: str) -> Callable[[list[str]], int]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise SystemExit(
                f"error: this mmrec installation has no `{module}` (command not available)."
            ) from e
        raise
    return getattr(mod, func)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmrec`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(levelname)s: %(message)s")
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"mmrec {__version__}")
        return 0
    verb = args[0]
    if verb in LIGHTNING_VERBS:
        from mmrec.lightning_cli import run_lightning_cli

        run_lightning_cli(args)
        return 0
    if verb in COMMANDS:
        module, func, _ = COMMANDS[verb]
        try:
            code = int(_load(module, func)(args[1:]) or 0)
            sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
            return code
        except BrokenPipeError:  # `mmrec ... | head`: the reader left; stop quietly as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    print(f"error: unknown command {verb!r}.\n", file=sys.stderr)
    print(_usage(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
