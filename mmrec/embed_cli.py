"""``mmrec embed``, ``mmrec shard`` and ``mmrec export``: build, pack and export embedding stores.

``mmrec embed --config configs/embed/demo.yaml [--only image,text] [--strict] [--trainer.devices 2
--trainer.strategy ddp --trainer.accelerator cpu] [--print_config]``
    builds every store of a recipe (see :mod:`mmrec.embedding.config` for the YAML); a store that already
    exists for the same encoder, weights, preprocessing, dtype and input is a cache hit and costs nothing.
    Any recipe key can be overridden on the command line (``--shard_size 128``, ``--cache /tmp/c``).
    Relative paths are resolved against the current directory.

``mmrec shard --dataset assets/demo --out shards/demo [--columns image audio video] [--max-count 1000]``
    packs a canonical dataset's media into webdataset tar shards, which ``mmrec embed`` reads with
    ``shards: "shards/demo/media-{000000..000002}.tar"`` instead of ``dataset:``.

``mmrec export --store cache/demo/image --format npy|parquet|recbole --out PATH [--field NAME]``
    writes a store for other recommenders.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Literal

from mmrec.embedding.config import DEFAULT_TRAINER, EmbedConfig

_EXIT_USAGE = 2
_EXIT_FAILURE = 1


def build_parser() -> Any:
    """The jsonargparse parser of ``mmrec embed`` (recipe keys + ``--config``, ``--only``, ``--print_config``)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    d = EmbedConfig.__dataclass_fields__
    p = ArgumentParser(
        prog="mmrec embed",
        description="Precompute embedding stores with frozen encoders (content-addressed, resumable, distributed "
        "through Lightning). Relative paths are resolved against the current directory.",
        default_env=False,
    )
    p.add_argument("--config", action=ActionConfigFile, help="recipe YAML, e.g. configs/embed/demo.yaml")
    p.add_argument("--dataset", type=str | None, default=None, help="canonical dataset folder")
    p.add_argument(
        "--shards",
        type=str | list[str] | None,
        default=None,
        help='webdataset tar shards: "dir/media-{000000..000003}.tar", a glob, a folder or a list',
    )
    p.add_argument(
        "--cache",
        type=str,
        default=d["cache"].default,
        help="cache folder: stores go to <cache>/<name>/<fingerprint>/",
    )
    p.add_argument(
        "--store_dtype",
        type=Literal["float16", "float32"],
        default=d["store_dtype"].default,
        help="dtype of the stored vectors",
    )
    p.add_argument(
        "--shard_size", type=int, default=d["shard_size"].default, help="items per work unit / part file"
    )
    p.add_argument(
        "--num_workers",
        type=int,
        default=d["num_workers"].default,
        help="DataLoader workers decoding + preprocessing",
    )
    p.add_argument(
        "--strict",
        type=bool,
        nargs="?",
        const=True,
        default=False,
        help="turn any item failure (missing file, corrupt media, empty text) into an error",
    )
    p.add_argument(
        "--encoders",
        type=list[dict[str, Any]],
        default=[],
        help="list of {name, encoder, column, batch_size, init_args, modality, decode_args}",
    )
    p.add_argument(
        "--trainer",
        type=dict[str, Any],
        default=dict(DEFAULT_TRAINER),
        help="lightning.Trainer kwargs, e.g. --trainer.devices 2 --trainer.strategy ddp",
    )
    p.add_argument(
        "--imports", type=list[str], default=[], help="modules to import first (they may register encoders)"
    )
    p.add_argument(
        "--only", type=str | None, default=None, help="build only these stores (comma-separated names)"
    )
    p.add_argument("--no_progress", type=bool, nargs="?", const=True, default=False, help="no progress bars")
    p.add_argument("--parts_dir", type=str | None, default=None, help="where ranks write parts ({rank})")
    p.add_argument("--merge", type=bool, default=True, help="false: ranks only write parts")
    p.add_argument("--lock_timeout", type=float | None, default=None, help="seconds to wait for a lock")
    p.add_argument("--merge_from", type=list[str] | None, default=None, help="assemble from part folders")
    return p


def _error(msg: str, code: int = _EXIT_FAILURE) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``mmrec embed``: build the stores of a recipe. Returns the exit status."""
    from mmrec.data.canonical import DatasetError
    from mmrec.embedding.config import ConfigError, EmbedError
    from mmrec.embedding.parts import PartError
    from mmrec.embedding.sources import ShardError
    from mmrec.encoders.weights import MissingWeightsError
    from mmrec.store.reader import StoreError

    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    values = ns.as_dict()
    only = values.pop("only", None)
    progress = not values.pop("no_progress", False)
    values.pop("config", None)
    merge_from = values.pop("merge_from", None)
    try:
        cfg = EmbedConfig.from_dict(values)
    except ConfigError as e:
        return _error(str(e), _EXIT_USAGE)
    from mmrec.embedding.pipeline import run_embed

    try:
        run_embed(cfg, only=only, progress=progress, merge_from=merge_from)
    except ConfigError as e:
        return _error(str(e), _EXIT_USAGE)
    except (EmbedError, DatasetError, ShardError, StoreError, PartError, MissingWeightsError) as e:
        return _error(str(e))
    except KeyError as e:  # unknown encoder name (the registry's message lists the registered ones)
        return _error(str(e.args[0]) if e.args else str(e))
    return 0


def shard_main(argv: Sequence[str] | None = None) -> int:
    """``mmrec shard``: pack a dataset's media into webdataset tar shards. Returns the exit status."""
    from mmrec.data.canonical import DatasetError
    from mmrec.embedding.sources import ShardError, ShardReport, write_shards

    p = argparse.ArgumentParser(
        prog="mmrec shard",
        description="Pack a canonical dataset's media (and text fields) into deterministic webdataset tar shards: "
        "<key>.json (item_id, text, media map) + <key>.<ext> per media column.",
    )
    p.add_argument("--dataset", required=True, help="canonical dataset folder")
    p.add_argument("--out", required=True, help="output folder for media-000000.tar, media-000001.tar, ...")
    p.add_argument(
        "--columns",
        nargs="+",
        default=None,
        help="media columns to pack (default: image audio video present)",
    )
    p.add_argument("--max-count", type=int, default=1000, help="items per shard (default 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace existing shards in --out")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    report: list[ShardReport] = []
    try:
        paths = write_shards(
            args.dataset,
            args.out,
            columns=args.columns,
            max_count=args.max_count,
            overwrite=args.overwrite,
            report=report,
        )
    except (DatasetError, ShardError, ValueError) as e:
        return _error(str(e))
    r = report[0]
    print(f"wrote {len(paths)} shard(s), {r.items} items, {r.bytes / 1e6:.1f} MB to {paths[0].parent}")
    for col, reasons in r.absent.items():
        print(f"  {col}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())))
    last = len(paths) - 1
    print(f'use in a recipe:  shards: "{paths[0].parent}/media-{{000000..{last:06d}}}.tar"')
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """``mmrec export``: write a store as npy + keys, Parquet or a RecBole ``.feat`` file."""
    from mmrec.embedding.export import FORMATS, export_store
    from mmrec.store.reader import StoreError

    p = argparse.ArgumentParser(
        prog="mmrec export",
        description="Export an embedding store: npy (matrix + .keys.txt + .mask.npy), parquet (item_id, vector, "
        "valid) or recbole (atomic .feat: item_id:token<TAB><field>:float_seq, valid rows only).",
    )
    p.add_argument("--store", required=True, help="store folder, or <cache>/<name> (follows CURRENT)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument(
        "--out", required=True, help="output file (npy: matrix path; keys and mask are written beside it)"
    )
    p.add_argument("--field", default="item_emb", help="RecBole feature name (default item_emb)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        paths = export_store(args.store, args.format, args.out, field=args.field, overwrite=args.overwrite)
    except StoreError as e:
        return _error(str(e))
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
