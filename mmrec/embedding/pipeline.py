"""The ``mmrec embed`` pipeline: content-addressed, resumable, distributed store builds through Lightning.

For each encoder entry of a recipe:

1. the store fingerprint is computed *before* the network is built (:mod:`mmrec.embedding.fingerprint`);
   an existing complete store ``<cache>/<name>/<fingerprint>/`` is a cache hit: nothing is computed;
2. otherwise the encoder is built and ``Trainer.predict`` runs over the items with
   ``use_distributed_sampler=False`` and this module's own batch sampler: the work unit is chunk ``k`` =
   items ``[k*S, (k+1)*S)`` (``S = shard_size``), the chunks still to do are dealt to ranks round-robin
   (the ``j``-th chunk to do goes to rank ``j % world_size``), and each chunk is encoded in fixed batches
   that never cross its boundary. Decoding and ``preprocess`` run in DataLoader workers; an item that
   cannot be read is recorded with its reason and left out of its batch (a batch of only failures gives
   an empty tensor), never stopping the run;
3. a :class:`PartWriter` callback (a ``BasePredictionWriter``) writes each finished chunk as part files
   (:mod:`mmrec.embedding.parts`) with a ``.done`` marker last, so a killed run resumes where it stopped;
4. after a barrier, rank 0 merges the parts into the complete store (:mod:`mmrec.embedding.merge`) and
   points ``<cache>/<name>/CURRENT`` at it.

Since a chunk's content and batches depend only on the input and ``shard_size``, the merged store is
bitwise the same whatever the number of processes and however often the build was resumed (for a given
device type and software stack; CPU thread counts can change float rounding in large matrix products).
With several nodes, ``cache`` must be on a filesystem all nodes share (each rank writes its own parts
there and rank 0 merges them). The supported distributed strategy is ``ddp`` (Lightning's default for
several devices), which re-launches the same command once per device.

Example:
    >>> from mmrec.embedding import EmbedConfig, run_embed
    >>> cfg = EmbedConfig.from_dict({"dataset": "assets/demo", "cache": "cache/demo", "encoders": [
    ...     {"name": "image", "encoder": "classic/color-histogram", "column": "image"}]})
    >>> results = run_embed(cfg)  # doctest: +SKIP
    >>> results[0].path  # doctest: +SKIP
    PosixPath('.../cache/demo/image/3f2a9c0d1e2b4a5c')
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from mmrec import __version__
from mmrec.embedding.config import EmbedConfig, EmbedError, EncoderEntry
from mmrec.embedding.data import Collator, ItemDataset
from mmrec.embedding.fingerprint import FileHashCache, entry_fingerprint, preprocessing_key, weights_identity
from mmrec.embedding.merge import merge_parts, write_current
from mmrec.embedding.parts import PartPlan
from mmrec.embedding.sources import DatasetSource, ShardSource, open_source
from mmrec.embedding.writer import EmbedDataModule, EmbedModule, PartWriter
from mmrec.encoders import create_encoder
from mmrec.store.reader import STORE_FORMAT

log = logging.getLogger("mmrec.embed")


# ============================================================================ results
@dataclass
class StoreResult:
    """Outcome of one recipe entry.

    Attributes:
        name: store name.
        path: the complete store folder ``<cache>/<name>/<fingerprint>``.
        fingerprint: its content address.
        cache_hit: True when the store existed and nothing was computed.
        manifest: the store's manifest.
        seconds: wall time of this entry in this run.
    """

    name: str
    path: Path
    fingerprint: str
    cache_hit: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One human-readable line: items, valid, missing, failures by reason, time, items/s, path."""
        m = self.manifest
        fails = m.get("failure_counts") or {}
        nfail = sum(fails.values())
        parts = [f"{m.get('count', '?')} items", f"{m.get('valid', '?')} valid"]
        if m.get("missing_count"):
            parts.append(f"{m['missing_count']} missing value")
        parts.append(
            f"{nfail} failed" + (f" ({', '.join(f'{r}: {c}' for r, c in fails.items())})" if nfail else "")
        )
        t = m.get("timings", {}).get("total_s")
        rate = m.get("throughput_items_per_s")
        timing = (
            f"built in {t:.1f} s"
            if self.cache_hit and t is not None
            else (f"{t:.1f} s" if t is not None else "")
        )
        if rate:
            timing += f", {rate:.1f} items/s"
        if self.cache_hit:
            timing += f"; this run {self.seconds * 1000:.0f} ms"
        dim = m.get("dim")
        warn = " [RANDOM-INIT weights]" if m.get("random_init") else ""
        return f"[{self.name}] {', '.join(parts)}; dim {dim}{warn}; {timing} -> {self.path}"


def _env_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) != 0:
            return int(os.environ[var])
    return 0 if os.environ.get("NODE_RANK", "0") in ("", "0") else 1


def _dist_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# ============================================================================ planning
@dataclass
class EntryPlan:
    """Everything decided about one entry before any network is built."""

    entry: EncoderEntry
    fingerprint: str
    weights: str
    preprocessing: dict[str, Any]
    input_fingerprint: str
    name_dir: Path
    store_dir: Path
    partial_dir: Path

    @property
    def complete(self) -> bool:
        return (self.store_dir / "manifest.json").is_file()


def plan_entry(
    cfg: EmbedConfig, entry: EncoderEntry, source: DatasetSource | ShardSource, hashes: FileHashCache
) -> EntryPlan:
    """Compute an entry's fingerprint and folders (cheap: no model, no item table, cached file hashes)."""
    modality = entry.resolved_modality()
    weights = weights_identity(entry.init_args, hashes)
    pre = preprocessing_key(entry.init_args, entry.columns, modality, entry.decode_args)
    inputs = source.input_fingerprint(hashes, columns=entry.columns, modality=modality)
    fp = entry_fingerprint(
        encoder=entry.encoder,
        weights=weights,
        preprocessing=pre,
        dtype=cfg.store_dtype,
        input_fingerprint=inputs,
        columns=entry.columns,
    )
    name_dir = cfg.cache_path / entry.name
    return EntryPlan(
        entry=entry,
        fingerprint=fp,
        weights=weights,
        preprocessing=pre,
        input_fingerprint=inputs,
        name_dir=name_dir,
        store_dir=name_dir / fp,
        partial_dir=name_dir / f"{fp}.partial",
    )


def _read_manifest(store_dir: Path) -> dict[str, Any]:
    with open(store_dir / "manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != STORE_FORMAT:
        raise EmbedError(f"{store_dir}/manifest.json is not an mmrec store manifest; delete {store_dir}.")
    return manifest


def _keys_digest(keys: Sequence[str]) -> str:
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {
        "mmrec": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import lightning

        out["lightning"] = lightning.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


# ============================================================================ running
def _encoder_decode_args(encoder: Any) -> dict[str, Any]:
    """The media-decoder options an encoder suggests (its optional ``decode_args()``), e.g. the sample rate."""
    fn = getattr(encoder, "decode_args", None)
    if not callable(fn):
        return {}
    args = fn()
    return dict(args) if isinstance(args, dict) else {}


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
    ):
        warnings.filterwarnings("ignore", message=pattern)


def build_entry(
    cfg: EmbedConfig, plan: EntryPlan, source: DatasetSource | ShardSource, *, strict: bool, progress: bool
) -> StoreResult | None:
    """Build one store (cache miss): encoder, ``Trainer.predict`` with the part writer, merge on rank 0.

    Returns:
        The result on rank 0, ``None`` on other ranks.
    """
    t0 = time.perf_counter()
    entry = plan.entry
    modality = entry.resolved_modality()
    source.check_columns(entry.columns, modality)
    encoder = create_encoder(entry.encoder, **entry.init_args)
    if encoder.modality != modality:
        raise EmbedError(
            f"store {entry.name!r}: encoder {entry.encoder} takes {encoder.modality} input but column "
            f"{entry.column!r} holds {modality}. Pick a {modality} encoder (`mmrec encoders`) or another column."
        )
    keys = [str(k) for k in source.item_ids]
    parts = PartPlan(
        plan.partial_dir, num_items=len(keys), shard_size=cfg.shard_size, keys_digest=_keys_digest(keys)
    )
    todo_hint = None
    if not _dist_initialized() and _env_rank() == 0:
        # no other process is running yet: list the chunks to do now (rank 0 re-uses the list in setup)
        todo_hint = parts.prepare()
        if not todo_hint:  # every chunk is done (a run killed while merging): just merge
            state = {"todo": [], "run_id": None}
            return _finish(
                cfg, plan, parts, keys, encoder, source, state, world_size=1, predict_s=0.0, started=t0
            )

    _quiet_lightning()
    decode_args = {**_encoder_decode_args(encoder), **entry.decode_args}
    dataset = ItemDataset(source, keys, entry.columns, modality, encoder.preprocess, decode_args)
    dm = EmbedDataModule(
        dataset, parts, entry.batch_size, cfg.num_workers, Collator(encoder.collate), todo=todo_hint
    )
    writer = PartWriter(
        parts,
        cfg.store_dtype,
        int(encoder.output_dim),
        strict=strict,
        desc=entry.name,
        progress=progress,
        state=dm.state,
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
    trainer.predict(EmbedModule(encoder), datamodule=dm, return_predictions=False)
    t_end = time.perf_counter()
    predict_s = t_end - t_pred
    # throughput is measured over the predict loop (after process start-up and group initialisation)
    dm.state["loop_s"] = t_end - dm.state.get("loop_started", t_pred)
    # every rank has written its parts; rank 0 merges while the others wait (a rank with no chunk skips
    # the predict loop entirely, so the barriers live here and not in a callback hook)
    trainer.strategy.barrier("mmrec-embed-parts-written")
    error: BaseException | None = None
    result = None
    if trainer.global_rank == 0:
        try:
            result = _finish(
                cfg,
                plan,
                parts,
                keys,
                encoder,
                source,
                dm.state,
                world_size=trainer.world_size,
                predict_s=predict_s,
                started=t0,
            )
        except BaseException as e:  # let the other ranks leave the barrier before raising
            error = e
    trainer.strategy.barrier("mmrec-embed-merged")
    if error is not None:
        raise error
    return result


def _finish(
    cfg: EmbedConfig,
    plan: EntryPlan,
    parts: PartPlan,
    keys: list[str],
    encoder: Any,
    source: DatasetSource | ShardSource,
    state: dict[str, Any],
    *,
    world_size: int,
    predict_s: float,
    started: float,
) -> StoreResult:
    entry = plan.entry
    todo = state.get("todo", [])
    computed = sum(parts.chunk_size(k) for k in todo)
    loop_s = float(state.get("loop_s", predict_s))
    actual_weights = str(getattr(encoder, "weights_identity", plan.weights))
    random_init = actual_weights.startswith("random-init")
    extra: dict[str, Any] = {
        "fingerprint": plan.fingerprint,
        "name": entry.name,
        "random_init": random_init,
        "encoder_info": encoder.describe(),
        "weights_requested": plan.weights,
        "modality": entry.resolved_modality(),
        "columns": entry.columns,
        "input": {**source.describe(), "input_fingerprint": plan.input_fingerprint},
        "preprocessing": plan.preprocessing,
        "decode_args": {**_encoder_decode_args(encoder), **entry.decode_args},
        "shard_size": cfg.shard_size,
        "batch_size": entry.batch_size,
        "num_parts": parts.num_chunks,
        "world_size": world_size,
        "resumed_parts": parts.num_chunks - len(todo),
        "items_computed": computed,
        "throughput_items_per_s": round(computed / loop_s, 3) if loop_s > 0 and computed else None,
        "versions": _versions(),
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
    merge_parts(
        parts,
        plan.store_dir,
        keys,
        dtype=cfg.store_dtype,
        encoder=entry.encoder,
        weights=actual_weights,
        started=started,
        timings={"predict_s": round(predict_s, 4), "predict_loop_s": round(loop_s, 4)},
        **extra,
    )
    write_current(plan.name_dir, plan.fingerprint)
    return StoreResult(
        entry.name,
        plan.store_dir,
        plan.fingerprint,
        False,
        _read_manifest(plan.store_dir),
        time.perf_counter() - started,
    )


def run_embed(
    cfg: EmbedConfig,
    *,
    only: str | Sequence[str] | None = None,
    strict: bool | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[StoreResult]:
    """Build (or find in the cache) every store of a recipe.

    Args:
        cfg: the recipe.
        only: store names to build (comma-separated or a list); default all.
        strict: override ``cfg.strict``: any item failure raises :class:`EmbedError`.
        progress: show a tqdm bar per store (rank 0).
        echo: where status lines go (default ``print``; silenced on ranks other than 0).

    Returns:
        One :class:`StoreResult` per selected entry on rank 0 (an empty list on other ranks).

    Raises:
        EmbedError: strict failure, or an encoder whose modality does not match the column.
        ConfigError / DatasetError / ShardError / MissingWeightsError: invalid inputs (messages say how to fix).
    """
    strict = cfg.strict if strict is None else strict
    entries = cfg.select(only)
    rank0 = _env_rank() == 0
    say = (echo or print) if rank0 else (lambda _msg: None)
    for module in cfg.imports:
        importlib.import_module(module)
    source = open_source(cfg.dataset_path, cfg.shards)
    hashes = FileHashCache(cfg.cache_path)
    results: list[StoreResult] = []
    for entry in entries:
        t0 = time.perf_counter()
        plan = plan_entry(cfg, entry, source, hashes)
        if plan.complete:
            manifest = _read_manifest(plan.store_dir)
            if rank0:
                current = plan.name_dir / "CURRENT"
                if not current.is_file() or current.read_text(encoding="utf-8").strip() != plan.fingerprint:
                    write_current(plan.name_dir, plan.fingerprint)
            result = StoreResult(
                entry.name, plan.store_dir, plan.fingerprint, True, manifest, time.perf_counter() - t0
            )
            say(f"cache hit: {plan.store_dir} (nothing to compute)")
            say(result.summary())
            results.append(result)
            continue
        say(f"[{entry.name}] building {plan.store_dir} ({entry.encoder} on {'+'.join(entry.columns)})")
        result = build_entry(cfg, plan, source, strict=strict, progress=progress)
        if result is not None:
            say(result.summary())
            results.append(result)
    return results if rank0 else []
