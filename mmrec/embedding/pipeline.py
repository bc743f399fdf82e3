"""The ``mmrec embed`` pipeline: content-addressed, resumable, locked, distributed store builds through Lightning.

For each encoder entry of a recipe:

1. the store fingerprint is computed *before* the network is built (:mod:`mmrec.embedding.fingerprint`,
   media and shards hashed by content); an existing complete store ``<cache>/<name>/<fingerprint>/`` is a
   cache hit: nothing is computed (and a ``<fingerprint>.partial`` folder left by a run that lost a race
   for it is removed);
2. otherwise rank 0 takes the store's lock (:class:`~mmrec.store.lock.StoreLock`, one writer per store; a
   second run waits and says who holds it, or fails after ``lock_timeout``), checks again whether the store
   was completed meanwhile, and the entry is built (:func:`~mmrec.embedding.build.build_entry`):
   ``Trainer.predict`` over the chunks still to do, which are dealt to ranks round-robin; a dataset's chunk
   is ``shard_size`` consecutive items in fixed batches, a webdataset shard is its own chunk, streamed by one
   DataLoader worker. Decoding and ``preprocess`` run in DataLoader workers; an item that cannot be read is
   recorded with its reason, never stopping the run;
3. a :class:`~mmrec.embedding.writer.PartWriter` writes each finished chunk as part files
   (:mod:`mmrec.embedding.parts`) with a ``.done`` marker last, so a killed run resumes where it stopped;
4. after a barrier, rank 0 merges the parts into the complete store (:mod:`mmrec.embedding.merge`),
   checking that every item is there exactly once, and points ``<cache>/<name>/CURRENT`` at it.

Since a chunk's content and batches depend only on the input and ``shard_size``, the merged store is
bitwise the same whatever the number of processes (idle ones included) and however often the build was
resumed (for a given device type and software stack; CPU thread counts can change float rounding in large
matrix products). Ranks write their parts to ``parts_dir`` (default: inside the cache); without a shared
filesystem, run with ``merge: false`` and assemble the copied part folders with ``run_embed(...,
merge_from=[...])`` (``mmrec embed --merge_from``). The supported distributed strategy is ``ddp``.

Example:
    >>> from mmrec.embedding import EmbedConfig, run_embed
    >>> cfg = EmbedConfig.from_dict({"dataset": "assets/demo", "cache": "cache/demo", "encoders": [
    ...     {"name": "image", "encoder": "classic/color-histogram", "column": "image"}]})
    >>> results = run_embed(cfg)  # doctest: +SKIP
    >>> results[0].path  # doctest: +SKIP
    PosixPath('.../cache/demo/image/3f2a9c0d1e2b4a5c')
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mmrec.embedding.build import build_entry, encoder_decode_args, merge_from_dirs
from mmrec.embedding.config import EmbedConfig
from mmrec.embedding.fingerprint import FileHashCache
from mmrec.embedding.merge import write_current
from mmrec.embedding.planning import EntryPlan, keys_digest, plan_entry
from mmrec.embedding.ranks import agree, env_rank, join_external_group, settled_before_launch
from mmrec.embedding.result import StoreResult, read_manifest
from mmrec.embedding.sources import DatasetSource, ShardSource, open_source
from mmrec.store.lock import StoreLock, StoreLockedError

# kept for callers of the former single-module pipeline
_encoder_decode_args = encoder_decode_args
_keys_digest = keys_digest
_read_manifest = read_manifest

__all__ = ["EntryPlan", "StoreResult", "plan_entry", "run_embed"]


def _lock(plan: EntryPlan, cfg: EmbedConfig, say: Callable[[str], None]) -> StoreLock:
    return StoreLock(
        plan.lock_path,
        timeout=cfg.lock_timeout,
        what=f"store {plan.entry.name!r} ({plan.store_dir})",
        echo=say,
    )


def _remove_leftovers(plan: EntryPlan, cfg: EmbedConfig) -> None:
    """Under the store's lock: temporaries of killed merges, and the ``.partial`` folder of a store that is
    complete (a run that lost the race for it, or was killed right after the merge)."""
    for tmp in plan.name_dir.glob(f".{plan.fingerprint}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if plan.complete:
        for partial in {plan.name_dir / f"{plan.fingerprint}.partial", plan.partial_dir_for(cfg, 0)}:
            shutil.rmtree(partial, ignore_errors=True)


def _tidy_after_hit(plan: EntryPlan, cfg: EmbedConfig) -> None:
    """On a cache hit: remove what a loser of the race left, if nobody is writing right now."""
    partials = [plan.name_dir / f"{plan.fingerprint}.partial", plan.partial_dir_for(cfg, 0)]
    if not any(p.exists() for p in partials) and not any(plan.name_dir.glob(f".{plan.fingerprint}.tmp-*")):
        return
    try:
        with StoreLock(plan.lock_path, timeout=0):
            _remove_leftovers(plan, cfg)
    except StoreLockedError:
        pass  # another run holds it (about to find the store complete); it tidies up itself


def _other_partials(plan: EntryPlan) -> list[Path]:
    """Unfinished builds of other inputs / settings of the same store name, with nobody writing them."""
    out = []
    for p in sorted(plan.name_dir.glob("*.partial")):
        fp = p.name[: -len(".partial")]
        if fp == plan.fingerprint or (plan.name_dir / f"{fp}.lock").exists():
            continue
        out.append(p)
    return out


def _hit(
    plan: EntryPlan, t0: float, rank0: bool, cfg: EmbedConfig, say: Callable[[str], None]
) -> StoreResult:
    manifest = read_manifest(plan.store_dir)
    if rank0:
        current = plan.name_dir / "CURRENT"
        if not current.is_file() or current.read_text(encoding="utf-8").strip() != plan.fingerprint:
            write_current(plan.name_dir, plan.fingerprint)
        _tidy_after_hit(plan, cfg)
    result = StoreResult(
        plan.entry.name, plan.store_dir, plan.fingerprint, True, manifest, time.perf_counter() - t0
    )
    say(f"cache hit: {plan.store_dir} (nothing to compute)")
    say(result.summary())
    return result


def run_embed(
    cfg: EmbedConfig,
    *,
    only: str | Sequence[str] | None = None,
    strict: bool | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    merge_from: Sequence[str | os.PathLike[str]] | None = None,
) -> list[StoreResult]:
    """Build (or find in the cache) every store of a recipe.

    Args:
        cfg: the recipe.
        only: store names to build (comma-separated or a list); default all.
        strict: override ``cfg.strict``: any item failure raises :class:`EmbedError`.
        progress: show a tqdm bar per store (rank 0).
        echo: where status lines go (default ``print``; silenced on ranks other than 0).
        merge_from: instead of computing, assemble each store from part folders written elsewhere (copies
            of the ranks' ``parts_dir`` after a ``merge: false`` run); one process only.

    Returns:
        One :class:`StoreResult` per selected entry on rank 0 (an empty list on other ranks; with
        ``merge: false``, only the cache hits).

    Raises:
        EmbedError: strict failure, or an encoder whose modality does not match the column.
        StoreLockedError: another run held a store's lock for longer than ``lock_timeout``.
        ConfigError / DatasetError / ShardError / PartError / MissingWeightsError: invalid inputs (messages
            say how to fix them).
    """
    strict = cfg.strict if strict is None else strict
    entries = cfg.select(only)
    for module in cfg.imports:
        importlib.import_module(module)
    join_external_group()
    rank0 = env_rank() == 0
    say = (echo or print) if rank0 else (lambda _msg: None)
    skip = settled_before_launch()
    source: DatasetSource | ShardSource = open_source(cfg.dataset_path, cfg.shards)
    hashes = FileHashCache(cfg.cache_path)
    results: list[StoreResult] = []
    settled: list[str] = []
    for entry in entries:
        if entry.name in skip:  # rank 0 settled it before it started this process
            continue
        t0 = time.perf_counter()
        plan = plan_entry(cfg, entry, source, hashes)
        if agree(plan.complete):
            results.append(_hit(plan, t0, rank0, cfg, say))
            settled.append(entry.name)
            continue
        lock = _lock(plan, cfg, say).acquire() if rank0 else None
        try:
            if rank0:
                _remove_leftovers(plan, cfg)
            if agree(plan.complete):  # another run completed it while we waited for the lock
                results.append(_hit(plan, t0, rank0, cfg, say))
                settled.append(entry.name)
                continue
            for other in _other_partials(plan) if rank0 else []:
                say(
                    f"note: {other} is an unfinished build of another input or setting of {entry.name!r} "
                    "(kept: a run of that recipe resumes it; delete it otherwise)"
                )
            if merge_from is not None:
                say(
                    f"[{entry.name}] assembling {plan.store_dir} from parts in {[str(d) for d in merge_from]}"
                )
                result: StoreResult | None = merge_from_dirs(cfg, plan, source, merge_from)
            else:
                say(
                    f"[{entry.name}] building {plan.store_dir} ({entry.encoder} on {'+'.join(entry.columns)})"
                )
                result = build_entry(
                    cfg, plan, source, strict=strict, progress=progress, settled=settled, echo=say
                )
        finally:
            if lock is not None:
                lock.release()
        settled.append(entry.name)
        if result is not None and rank0:
            say(result.summary())
            results.append(result)
    return results if rank0 else []
