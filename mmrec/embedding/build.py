"""Building one store on a cache miss: the encoder, ``Trainer.predict`` with the part writer, the merge.

:func:`build_entry` runs on every rank. Rank 0 lists the chunks still to do before any other process
exists (a build killed while merging only merges again); the encoder is built and ``Trainer.predict`` runs
with this package's own sampler and part writer (:mod:`mmrec.embedding.writer`); after a barrier rank 0
merges every part into the store (:func:`finish`) while the others wait at a second barrier. With
``merge: false`` the parts stay where each rank wrote them, for :func:`merge_from_dirs` (``mmrec embed
--merge_from``) on the machine that holds the cache.

Example:
    >>> result = build_entry(cfg, plan, source, strict=False, progress=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import numpy as np
import torch

from mmrec import __version__
from mmrec.embedding.config import EmbedConfig, EmbedError
from mmrec.embedding.data import Collator, ItemDataset
from mmrec.embedding.merge import merge_parts, write_current
from mmrec.embedding.parts import PartError, PartPlan, part_name, read_part
from mmrec.embedding.planning import EntryPlan, dataset_keys, part_plan
from mmrec.embedding.ranks import SETTLED_ENV, dist_initialized, env_rank, mark_settled
from mmrec.embedding.result import StoreResult, read_manifest
from mmrec.embedding.sources import DatasetSource, ShardSource
from mmrec.embedding.stream import ShardStream
from mmrec.embedding.writer import EmbedDataModule, EmbedModule, PartWriter, gather_objects
from mmrec.encoders import create_encoder


def versions() -> dict[str, str]:
    """Versions recorded in a store's manifest."""
    return {
        "mmrec": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "lightning": lightning.__version__,
    }


def encoder_decode_args(encoder: Any) -> dict[str, Any]:
    """The media-decoder options an encoder suggests (its optional ``decode_args()``), e.g. the sample rate."""
    fn = getattr(encoder, "decode_args", None)
    if not callable(fn):
        return {}
    args = fn()
    return dict(args) if isinstance(args, dict) else {}


def producer_of(encoder: Any, plan: EntryPlan) -> dict[str, Any]:
    """What made the vectors, recorded in every part so that a merge needs no encoder."""
    return {
        "encoder_info": encoder.describe(),
        "weights": str(getattr(encoder, "weights_identity", plan.weights)),
        "decode_args": {**encoder_decode_args(encoder), **plan.entry.decode_args},
    }


def _quiet_lightning() -> None:
    """Silence Lightning's start-up chatter and the warnings that do not apply to embedding jobs."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.distributed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",  # num_workers is the recipe's choice
        ".*GPU available but not used.*",
        ".*custom batch sampler.*",  # ChunkBatchSampler returns every index by construction
        ".*has 0 batches.*|.*Total length of.*across ranks is zero.*",  # a rank may have no chunk left
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*Couldn't infer the batch indices.*",  # shard streams yield finished batches (no sampler)
    ):
        warnings.filterwarnings("ignore", message=pattern)


def build_entry(
    cfg: EmbedConfig,
    plan: EntryPlan,
    source: DatasetSource | ShardSource,
    *,
    strict: bool,
    progress: bool,
    settled: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> StoreResult | None:
    """Build one store (cache miss) on every rank; merge on rank 0.

    Args:
        cfg: the recipe.
        plan: the entry's plan.
        source: the input.
        strict: any failed item raises :class:`EmbedError`.
        progress: tqdm bar on rank 0.
        settled: entries rank 0 finished before this one (inherited by ranks Lightning starts here).
        echo: status lines (rank 0).

    Returns:
        The result on rank 0 (``None`` with ``merge: false``), ``None`` on other ranks.
    """
    t0 = time.perf_counter()
    entry = plan.entry
    modality = entry.resolved_modality()
    source.check_columns(entry.columns, modality)
    keys = dataset_keys(source)
    parts = part_plan(cfg, plan, source, keys)
    todo_hint = None
    if not dist_initialized() and env_rank() == 0:
        # no other process is running yet: list the chunks to do now (rank 0 re-uses the list in setup)
        todo_hint = parts.prepare()
        if not todo_hint:  # every chunk is done (a run killed while merging): just merge
            if not cfg.merge:
                echo(
                    f"[{entry.name}] every part is already written in {parts.partial_dir}; nothing to compute"
                )
                return None
            return finish(
                cfg, plan, parts, keys, source, {"todo": []}, world_size=1, predict_s=0.0, started=t0
            )
    t_build = time.perf_counter()
    encoder = create_encoder(entry.encoder, **entry.init_args)
    build_s = time.perf_counter() - t_build
    if encoder.modality != modality:
        raise EmbedError(
            f"store {entry.name!r}: encoder {entry.encoder} takes {encoder.modality} input but column "
            f"{entry.column!r} holds {modality}. Pick a {modality} encoder (`mmrec encoders`) or another column."
        )

    _quiet_lightning()
    decode_args = {**encoder_decode_args(encoder), **entry.decode_args}
    collate = Collator(encoder.collate)
    dataset: ItemDataset | ShardStream
    if isinstance(source, ShardSource):
        dataset = ShardStream(
            source, entry.columns, modality, encoder.preprocess, decode_args, entry.batch_size, collate
        )
    else:
        assert keys is not None
        dataset = ItemDataset(source, keys, entry.columns, modality, encoder.preprocess, decode_args)
    dm = EmbedDataModule(
        dataset,
        parts,
        entry.batch_size,
        cfg.num_workers,
        collate,
        todo=todo_hint,
        partial_dir_for=lambda rank: plan.partial_dir_for(cfg, rank, int(trainer.node_rank)),
    )
    writer = PartWriter(
        parts,
        cfg.store_dtype,
        int(encoder.output_dim),
        strict=strict,
        desc=entry.name,
        progress=progress,
        state=dm.state,
        producer=producer_of(encoder, plan),
    )
    kwargs = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        **cfg.trainer,
        "use_distributed_sampler": False,
        "callbacks": [writer],
    }
    trainer = pl.Trainer(**kwargs)
    t_pred = time.perf_counter()
    mark_settled(list(settled))  # the ranks Lightning starts inside predict() skip these entries
    try:
        trainer.predict(EmbedModule(encoder, cfg.store_dtype), datamodule=dm, return_predictions=False)
    finally:
        if trainer.global_rank == 0:
            os.environ.pop(SETTLED_ENV, None)
    t_end = time.perf_counter()
    predict_s = t_end - t_pred
    # throughput is measured over the predict loop (after process start-up and group initialisation)
    dm.state["loop_s"] = t_end - dm.state.get("loop_started", t_pred)
    dm.state["encoder_build_s"] = build_s
    # every rank has written its parts; rank 0 merges while the others wait (a rank with no chunk ran an
    # empty loop, so the barriers live here and not in a callback hook)
    trainer.strategy.barrier("mmrec-embed-parts-written")
    written = gather_objects(
        trainer,
        {
            "rank": trainer.global_rank,
            "host": socket.gethostname(),
            "dir": str(parts.partial_dir),
            "chunks": writer.chunks_written,
        },
    )
    error: BaseException | None = None
    result = None
    if trainer.global_rank == 0:
        try:
            if cfg.merge:
                result = finish(
                    cfg,
                    plan,
                    parts,
                    keys,
                    source,
                    dm.state,
                    world_size=trainer.world_size,
                    predict_s=predict_s,
                    started=t0,
                    written=written,
                )
            else:
                where = sorted({f"{w['host']}:{w['dir']}" for w in written})
                echo(
                    f"[{entry.name}] parts written ({len(dm.state['todo'])} computed in this run) to {', '.join(where)}; "
                    "copy those folders to one machine and assemble the store with "
                    "`mmrec embed --config <recipe> --merge_from <folder> [<folder> ...]`"
                )
        except BaseException as e:  # let the other ranks leave the barrier before raising
            error = e
    trainer.strategy.barrier("mmrec-embed-merged")
    if error is not None:
        raise error
    return result


def _unreachable_parts_error(e: PartError, written: list[dict[str, Any]], here: Path) -> EmbedError:
    elsewhere = [w for w in written if w["dir"] != str(here) or w["host"] != socket.gethostname()]
    ranks = "; ".join(f"rank {w['rank']} on {w['host']}: {w['dir']}" for w in elsewhere)
    return EmbedError(
        f"{e} The ranks wrote their parts where rank 0 cannot read them ({ranks}). Run with `merge: false` "
        "(each rank then only writes its parts), copy the part folders to the machine with the cache and run "
        "`mmrec embed --config <recipe> --merge_from <folder> [<folder> ...]`."
    )


def finish(
    cfg: EmbedConfig,
    plan: EntryPlan,
    parts: PartPlan,
    keys: list[str] | None,
    source: DatasetSource | ShardSource,
    state: dict[str, Any],
    *,
    world_size: int,
    predict_s: float | None,
    started: float,
    part_dirs: Sequence[Path] = (),
    written: list[dict[str, Any]] | None = None,
) -> StoreResult:
    """Merge the parts into the store with its manifest, point ``CURRENT`` at it, and describe the result."""
    entry = plan.entry
    todo = state.get("todo", [])
    first_dir = next(
        (d for d in [Path(parts.partial_dir), *part_dirs] if (d / f"{part_name(0)}.done").is_file()), None
    )
    producer = read_part(first_dir, 0)[1].get("producer", {}) if first_dir is not None else {}
    computed = sum(int(read_part_rows(parts, part_dirs, k)) for k in todo)
    loop_s = float(state.get("loop_s", predict_s or 0.0))
    actual_weights = str(producer.get("weights", plan.weights))
    random_init = actual_weights.startswith("random-init")
    timings: dict[str, Any] = {}
    if predict_s is not None:
        timings = {"predict_s": round(predict_s, 4), "predict_loop_s": round(loop_s, 4)}
    if "encoder_build_s" in state:
        timings["encoder_build_s"] = round(float(state["encoder_build_s"]), 4)
    extra: dict[str, Any] = {
        "fingerprint": plan.fingerprint,
        "name": entry.name,
        "random_init": random_init,
        "encoder_info": producer.get("encoder_info"),
        "weights_requested": plan.weights,
        "modality": entry.resolved_modality(),
        "columns": entry.columns,
        "input": {**source.describe(), "input_fingerprint": plan.input_fingerprint},
        "preprocessing": plan.preprocessing,
        "decode_args": producer.get("decode_args", dict(entry.decode_args)),
        "shard_size": cfg.shard_size if parts.sized else None,
        "batch_size": entry.batch_size,
        "num_parts": parts.num_chunks,
        "world_size": world_size,
        "resumed_parts": parts.num_chunks - len(todo),
        "items_computed": computed,
        "throughput_items_per_s": round(computed / loop_s, 3) if loop_s > 0 and computed else None,
        "versions": versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipe_entry": {
            "name": entry.name,
            "encoder": entry.encoder,
            "column": entry.column,
            "init_args": entry.init_args,
            "batch_size": entry.batch_size,
            "decode_args": entry.decode_args,
        },
    }
    if isinstance(source, DatasetSource):
        extra["dataset"] = {
            "path": str(source.path),
            "fingerprint": source.meta.get("fingerprint"),
            "name": source.meta.get("name"),
        }
    if random_init:
        extra["warning"] = (
            "RANDOM-INIT WEIGHTS: these vectors carry no pretrained knowledge (weights: random)."
        )
    try:
        merge_parts(
            parts,
            plan.store_dir,
            keys,
            dtype=cfg.store_dtype,
            encoder=entry.encoder,
            weights=actual_weights,
            part_dirs=part_dirs,
            started=started,
            timings=timings,
            **extra,
        )
    except PartError as e:
        if written and any(
            w["dir"] != str(parts.partial_dir) or w["host"] != socket.gethostname() for w in written
        ):
            raise _unreachable_parts_error(e, written, Path(parts.partial_dir)) from e
        raise
    write_current(plan.name_dir, plan.fingerprint)
    return StoreResult(
        entry.name,
        plan.store_dir,
        plan.fingerprint,
        False,
        read_manifest(plan.store_dir),
        time.perf_counter() - started,
    )


def read_part_rows(parts: PartPlan, part_dirs: Sequence[Path], k: int) -> int:
    """Rows of chunk ``k``'s part (its size, known in advance for a dataset)."""
    size = parts.chunk_size(k)
    if size is not None:
        return size
    for d in [Path(parts.partial_dir), *part_dirs]:
        marker = d / f"{part_name(k)}.done"
        if marker.is_file():
            return int(json.loads(marker.read_text(encoding="utf-8")).get("rows", 0))
    return 0


def merge_from_dirs(
    cfg: EmbedConfig,
    plan: EntryPlan,
    source: DatasetSource | ShardSource,
    dirs: Sequence[str | os.PathLike[str]],
) -> StoreResult:
    """Assemble a store from parts that other processes wrote (``mmrec embed --merge_from``).

    Each folder may be a copy of a rank's ``parts_dir`` (holding ``<name>/<fingerprint>.partial/``), a
    ``<name>`` folder (holding ``<fingerprint>.partial/``) or the ``.partial`` folder itself.

    Raises:
        PartError: a chunk has no part in any folder, or two folders hold different rows for it; an item is
            missing or appears twice.
    """
    t0 = time.perf_counter()
    keys = dataset_keys(source)
    parts = part_plan(cfg, plan, source, keys)
    found: list[Path] = []
    for d in (Path(x).expanduser().resolve() for x in dirs):
        if not d.is_dir():
            raise PartError(f"--merge_from {d}: no such folder.")
        for cand in (
            d / plan.entry.name / f"{plan.fingerprint}.partial",
            d / f"{plan.fingerprint}.partial",
            d,
        ):
            if (
                cand.is_dir()
                and PartPlan(
                    cand, parts.num_items, parts.shard_size, parts.keys_digest, parts.shards
                ).matches()
            ):
                found.append(cand)
                break
    if not found and not parts.matches():
        raise PartError(
            f"none of {[str(d) for d in dirs]} holds parts of store {plan.entry.name!r} {plan.fingerprint} (a "
            f"`{plan.fingerprint}.partial` folder written for this recipe and input)."
        )
    # the cache's own .partial folder is created only if parts are missing: merge_parts removes it after
    return finish(
        cfg,
        plan,
        parts,
        keys,
        source,
        {"todo": []},
        world_size=1,
        predict_s=None,
        started=t0,
        part_dirs=found,
    )
