"""``mmrec embed``, ``mmrec shard`` and ``mmrec export``: build, pack and export embedding stores.

``mmrec embed --config configs/embed/demo.yaml [--only image,text] [--strict] [--threads N]
[--trainer.devices 2 --trainer.strategy ddp --trainer.accelerator cpu] [--lock_timeout S]``
    builds every store of a recipe; the recipe is :class:`mmrec.embedding.config.EmbedConfig`, read by
    jsonargparse, so any key can be overridden (``--shard_size 128``, ``--cache /tmp/c``,
    ``--trainer.devices 2``; a list such as ``encoders`` is replaced whole: ``--encoders '[{...}]'``).
    A store that already exists for the same encoder, weights, preprocessing, dtype and input is a cache hit
    and costs nothing. Relative paths resolve against the current directory. A second run on the same store
    waits for the first (``--lock_timeout 0``: fails at once, naming the run that holds the lock).
    ``--shards`` takes webdataset-style names instead of ``--dataset``: brace-expanded lists, ``pipe:``
    commands, ``http(s)://`` and object-store URLs. Without a shared filesystem: ``--parts_dir
    '/scratch/parts-{rank}' --merge false`` on every node, then ``--merge_from '[dir, ...]'`` on one.

``mmrec shard --dataset assets/demo --out shards/demo [--columns [image, audio]] [--max_count 1000]``
    packs a canonical dataset's media into webdataset tar shards, which ``mmrec embed`` reads with
    ``shards: "shards/demo/media-{000000..000002}.tar"`` instead of ``dataset:``.

``mmrec export --store cache/demo/image --format npy|parquet|recbole --out PATH [--field NAME]``
    writes a store for other recommenders.
"""

from __future__ import annotations

from typing import Any, Literal

from jsonargparse import ArgumentParser

from mmrec.cli.common import CommandError, apply_threads, interactive, load
from mmrec.cli.dialect import add_signature, bare_flags, new_parser, parse
from mmrec.embedding.config import EmbedConfig

RUN_EMBED = "mmrec.embedding.pipeline:run_embed"
WRITE_SHARDS = "mmrec.embedding.sources:write_shards"
EXPORT = "mmrec.embedding.export:export_store"

#: options of `mmrec embed` that are not recipe keys
RUN_OPTIONS = ("only", "threads", "merge_from")


def build_embed_parser() -> ArgumentParser:
    """The ``mmrec embed`` parser: every :class:`EmbedConfig` key plus ``--only`` and ``--threads``."""
    p = new_parser(
        "mmrec embed",
        "Precompute embedding stores with frozen encoders (content-addressed, resumable, distributed through "
        "Lightning). The options are the recipe's keys (see configs/embed/demo.yaml).",
    )
    p.add_class_arguments(EmbedConfig, as_group=False, skip={"encoders"})
    # entries stay plain mappings here (their key `init_args` is not jsonargparse's): EmbedConfig checks them
    p.add_argument(
        "--encoders",
        type=list[dict[str, Any]],
        default=[],
        help="stores to build: a list of {name, encoder, column, batch_size, init_args, modality, decode_args}",
    )
    p.add_argument(
        "--only", type=str | None, default=None, help="build only these stores (comma-separated names)"
    )
    p.add_argument(
        "--merge_from",
        type=list[str] | None,
        default=None,
        help="assemble the stores from part folders other machines wrote (`merge: false` runs) instead of "
        "computing: --merge_from '[host0/parts, host1/parts]'",
    )
    p.add_argument(
        "--threads",
        type=int | None,
        default=None,
        help="CPU threads per process (default: see mmrec.cli.common.choose_threads)",
    )
    return bare_flags(p)


def embed(argv: list[str]) -> int:
    """``mmrec embed``: build the stores of a recipe. Returns the exit status."""
    values = parse(build_embed_parser(), argv).as_dict()
    values.pop("config", None)
    run = {k: values.pop(k) for k in RUN_OPTIONS}
    cfg = EmbedConfig.from_dict(values)  # ConfigError (exit 2) names the key and the fix
    apply_threads(run["threads"])
    load(RUN_EMBED)(cfg, only=run["only"], progress=interactive(), merge_from=run["merge_from"])
    return 0


def shard_options(
    dataset: str,
    out: str,
    columns: list[str] | None = None,
    max_count: int = 1000,
    overwrite: bool = False,
) -> None:
    """Options of ``mmrec shard``.

    Args:
        dataset: canonical dataset folder.
        out: output folder for media-000000.tar, media-000001.tar, ...
        columns: media columns to pack (default: the image / audio / video columns present).
        max_count: items per shard.
        overwrite: replace existing shards in --out.
    """


def shard(argv: list[str]) -> int:
    """``mmrec shard``: pack a dataset's media into webdataset tar shards. Returns the exit status."""
    p = new_parser(
        "mmrec shard",
        "Pack a canonical dataset's media (and text fields) into deterministic webdataset tar shards: "
        "<key>.json (item_id, text, media map) + <key>.<ext> per media column.",
    )
    add_signature(p, shard_options, positional=False)
    args = parse(p, argv)
    report: list = []
    paths = load(WRITE_SHARDS)(
        args.dataset,
        args.out,
        columns=args.columns,
        max_count=args.max_count,
        overwrite=args.overwrite,
        report=report,
    )
    r = report[0]
    print(f"wrote {len(paths)} shard(s), {r.items} items, {r.bytes / 1e6:.1f} MB to {paths[0].parent}")
    for col, reasons in r.absent.items():
        print(f"  {col}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())))
    last = len(paths) - 1
    print(f'use in a recipe:  shards: "{paths[0].parent}/media-{{000000..{last:06d}}}.tar"')
    return 0


def export_options(
    store: str,
    format: Literal["npy", "parquet", "recbole"],
    out: str,
    field: str = "item_emb",
    overwrite: bool = False,
) -> None:
    """Options of ``mmrec export``.

    Args:
        store: store folder, or <cache>/<name> (follows CURRENT).
        format: npy (matrix + .keys.txt + .mask.npy), parquet (item_id, vector, valid) or recbole (atomic
            .feat: item_id:token<TAB><field>:float_seq, valid rows only).
        out: output file (npy: the matrix path; keys and mask are written beside it).
        field: RecBole feature name.
        overwrite: replace existing output files.
    """


def export(argv: list[str]) -> int:
    """``mmrec export``: write a store as npy + keys, Parquet or a RecBole ``.feat`` file."""
    p = new_parser("mmrec export", "Export an embedding store for other recommenders.")
    add_signature(p, export_options, positional=False)
    args = parse(p, argv)
    paths = load(EXPORT)(args.store, args.format, args.out, field=args.field, overwrite=args.overwrite)
    if not paths:
        raise CommandError("nothing was written.")
    for path in paths:
        print(f"wrote {path}")
    return 0
