"""Lightning side of ``mmrec embed``: the module that encodes, the datamodule that deals chunks to ranks,
and the prediction writer that turns finished chunks into part files.

- :class:`EmbedModule`: ``predict_step`` encodes the valid items of a batch -> ``(n_valid, D)`` on CPU
  (a batch of only failures gives a ``(0, D)`` tensor without calling the encoder).
- :class:`EmbedDataModule`: in ``setup`` every rank reports the chunks whose parts it can see complete (its
  own part folder: shared with the others or not), rank 0 takes the union and broadcasts what is left to
  do; each rank takes every ``world_size``-th chunk of that list. A rank dealt nothing (more processes than
  chunks) runs an empty loop and still joins every barrier. Dataset chunks are iterated in fixed batches
  (:class:`~mmrec.embedding.data.ChunkBatchSampler`); shards are streamed, one DataLoader worker per shard
  (:class:`~mmrec.embedding.stream.ShardStream`).
- :class:`PartWriter`: a ``BasePredictionWriter`` (``write_interval="batch"``) that collects each chunk's
  rows (batches of several chunks arrive interleaved when workers stream different shards) and writes its
  part files once the chunk is complete; with ``strict`` the first failed item raises :class:`EmbedError`.

Keeping the accelerator busy: part files are written (and fsynced) by a background thread, so the forward
of the next batches does not wait for the disk; on a GPU the vectors are cast to the store dtype on the
device and copied to pinned host memory without blocking, and the writer reads batch ``i`` only after batch
``i + 1`` was launched, so copies and bookkeeping overlap the next forward instead of draining the GPU every
batch. The bytes written are the same either way (float32 -> float16 rounds to nearest even in torch and
numpy alike).

Example:
    >>> import lightning.pytorch as pl  # doctest: +SKIP
    >>> trainer = pl.Trainer(use_distributed_sampler=False, callbacks=[PartWriter(plan, "float16", 64)])  # doctest: +SKIP
    >>> trainer.predict(EmbedModule(encoder), datamodule=EmbedDataModule(dataset, plan, 64, 2, collate))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from mmrec.embedding.config import EmbedError
from mmrec.embedding.data import ChunkBatchSampler, Collator, ItemDataset, assign_chunks
from mmrec.embedding.parts import PartPlan, write_part
from mmrec.embedding.sources import ShardError
from mmrec.embedding.stream import ShardStream, passthrough


def gather_objects(trainer: pl.Trainer, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if trainer.world_size <= 1 or not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        return [value]
    out: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(out, value)
    return out


class EmbedModule(pl.LightningModule):
    """Wraps a frozen encoder for ``Trainer.predict``.

    Args:
        encoder: a :class:`~mmrec.encoders.base.FrozenEncoder`.
        store_dtype: the store's dtype; on a GPU the vectors are cast to it before they leave the device.
    """

    def __init__(self, encoder: torch.nn.Module, store_dtype: str = "float32") -> None:
        super().__init__()
        self.encoder = encoder
        self.store_dtype = getattr(torch, store_dtype)
        # with more processes than chunks some ranks get no batch at all: they run an empty loop
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Encode the batch's valid items.

        Returns:
            ``{"vectors": (n_valid, D) CPU tensor, "encode_s": seconds}``, plus ``"ready"`` (a CUDA event)
            when the vectors are still being copied from the GPU (read them after ``ready.synchronize()``).
        """
        t0 = time.perf_counter()
        if batch.get("inputs") is None:  # only failures, an empty shard, or an unreadable shard
            return {"vectors": torch.zeros(0, int(self.encoder.output_dim)), "encode_s": 0.0}
        n_ok = sum(s == "ok" for s in batch["status"])
        vectors = self.encoder.encode(batch["inputs"])
        if vectors.shape[0] != n_ok:
            raise EmbedError(f"{self.encoder.name} returned {vectors.shape[0]} rows for {n_ok} items.")
        if vectors.is_cuda:
            vectors = vectors.to(self.store_dtype)  # half the bytes to copy for a float16 store
            host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
            host.copy_(vectors, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            return {"vectors": host, "ready": ready, "encode_s": time.perf_counter() - t0}
        return {"vectors": vectors.detach().cpu(), "encode_s": time.perf_counter() - t0}


class EmbedDataModule(pl.LightningDataModule):
    """Decides which chunks are still to do (union over ranks of the complete parts) and deals them.

    After ``setup``, :attr:`state` holds ``todo`` (all chunks to do in this run), ``mine`` (this rank's),
    ``run_id``, ``rank``, ``world_size`` and ``partial_dir`` (where this rank writes its parts).

    Args:
        dataset: the item dataset (:class:`ItemDataset`) or shard stream (:class:`ShardStream`).
        plan: the chunking; its ``partial_dir`` is set per rank in ``setup`` (see ``partial_dir_for``).
        batch_size: items per forward pass.
        num_workers: DataLoader workers.
        collate: the collator (dataset chunks; shard streams collate in their workers).
        todo: the chunks to do, when rank 0 already listed them before the processes started.
        partial_dir_for: rank -> part folder of that rank (default: ``plan.partial_dir`` for every rank).
    """

    def __init__(
        self,
        dataset: ItemDataset | ShardStream,
        plan: PartPlan,
        batch_size: int,
        num_workers: int,
        collate: Collator,
        todo: list[int] | None = None,
        partial_dir_for: Callable[[int], Path] | None = None,
    ) -> None:
        super().__init__()
        self.todo_hint = todo
        self.dataset = dataset
        self.plan = plan
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate = collate
        self.partial_dir_for = partial_dir_for
        self.state: dict[str, Any] = {}
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        rank, world = trainer.global_rank, trainer.world_size
        if self.partial_dir_for is not None:
            self.plan.partial_dir = Path(self.partial_dir_for(rank))
        # rank 0 first (it may discard the parts of an older plan in a folder the others share), then the
        # others look at their own folder: the same one, or one that only they can see
        done: list[int] = []
        if trainer.is_global_zero:
            todo0 = self.todo_hint if self.todo_hint is not None else self.plan.prepare()
            done = sorted(set(range(self.plan.num_chunks)) - set(todo0))
        trainer.strategy.barrier("mmrec-embed-rank0-prepared")
        if not trainer.is_global_zero:
            done = (
                self.plan.done()
                if self.plan.matches()
                else sorted(set(range(self.plan.num_chunks)) - set(self.plan.prepare()))
            )
        seen = set().union(*gather_objects(trainer, done))
        payload = None
        if trainer.is_global_zero:
            payload = {
                "todo": [k for k in range(self.plan.num_chunks) if k not in seen],
                "run_id": uuid.uuid4().hex[:12],
            }
        payload = trainer.strategy.broadcast(payload, src=0)
        self.state.update(
            todo=list(payload["todo"]),
            run_id=payload["run_id"],
            rank=rank,
            world_size=world,
            partial_dir=str(self.plan.partial_dir),
            mine=assign_chunks(payload["todo"], rank, world),
        )

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        pin = bool(trainer is not None and trainer.strategy.root_device.type == "cuda")
        if isinstance(self.dataset, ShardStream):
            self.dataset.assign(self.state["mine"])
            return torch.utils.data.DataLoader(
                self.dataset,
                batch_size=None,
                num_workers=min(self.num_workers, len(self.state["mine"])),
                collate_fn=passthrough,
                pin_memory=pin,
            )
        assert self.plan.num_items is not None
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=ChunkBatchSampler(
                self.state["mine"], self.plan.shard_size, self.plan.num_items, self.batch_size
            ),
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=pin,
        )


@dataclass
class _OpenChunk:
    """Rows and per-item metadata of a chunk being received."""

    rows: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, list[Any]] = field(default_factory=dict)
    filled: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    encode_s: float = 0.0
    preprocess_s: float = 0.0


class PartWriter(BasePredictionWriter):
    """Collects each chunk's rows batch by batch and writes its part files when the chunk is complete.

    A dataset chunk is complete when all its items arrived; a shard when its last batch (``last``) did.

    Args:
        plan: the chunking (part folder, chunk sizes).
        dtype: store dtype of the rows (``float16`` / ``float32``).
        dim: encoder output size.
        strict: raise :class:`EmbedError` on the first failed item (naming item, file, reason).
        desc: label of the progress bar.
        progress: show a tqdm bar with items/s on rank 0.
        state: the datamodule's :attr:`EmbedDataModule.state` (this rank's chunks, run id).
        producer: recorded in every part (encoder description, weights identity, decode options), so that
            parts can be merged into a store by a process that never built the encoder.
    """

    _META_FIELDS = ("keys", "status", "reasons", "sources", "details")

    def __init__(
        self,
        plan: PartPlan,
        dtype: str,
        dim: int,
        *,
        strict: bool = False,
        desc: str = "",
        progress: bool = True,
        state: dict[str, Any] | None = None,
        producer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.dim = dim
        self.strict = strict
        self.desc = desc
        self.progress = progress
        self.state = state if state is not None else {}
        self.producer = dict(producer or {})
        self.open: dict[int, _OpenChunk] = {}
        self.bar: Any = None
        self.items_written = 0
        self.chunks_written: list[int] = []
        self._pending: tuple[Any, Any] | None = None  # a GPU batch whose vectors are still on their way
        self._io: ThreadPoolExecutor | None = None
        self._writes: list[Future[None]] = []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state["loop_started"] = time.perf_counter()
        if self.progress and trainer.is_global_zero:
            from tqdm.auto import tqdm

            sizes = [self.plan.chunk_size(k) for k in self.state.get("mine", [])]
            total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
            suffix = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
            self.bar = tqdm(
                total=total,
                desc=f"embed {self.desc}{suffix}",
                unit="item",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def _check_strict(self, batch: dict[str, Any]) -> None:
        for key, status, reason, source, detail in zip(
            batch["keys"], batch["status"], batch["reasons"], batch["sources"], batch["details"]
        ):
            if status == "failed":
                raise EmbedError(
                    f"--strict: item {key!r} ({source}) failed: {reason}"
                    + (f" ({detail})" if detail else "")
                    + ". Fix or remove that input, or run without --strict to record failures as masked rows."
                )

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._check_writes()
        pending, self._pending = self._pending, None
        if pending is not None:  # the previous GPU batch: its copy ran while this batch was computed
            self._receive(trainer, *pending)
        if "ready" in prediction:
            self._pending = (prediction, batch)
        else:
            self._receive(trainer, prediction, batch)

    def _receive(self, trainer: pl.Trainer, prediction: dict[str, Any], batch: dict[str, Any]) -> None:
        if "ready" in prediction:
            prediction["ready"].synchronize()
        if "error" in batch:
            raise ShardError(
                f"{batch['error']} The parts of the shards finished so far are kept: run `mmrec embed` again "
                "to resume once the shard can be read."
            )
        if self.strict:
            self._check_strict(batch)
        n = len(batch["index"])
        k = int(batch["chunk"]) if "chunk" in batch else batch["index"][0] // self.plan.shard_size
        chunk = self.open.get(k)
        if chunk is None:
            chunk = self.open[k] = _OpenChunk(meta={f: [] for f in self._META_FIELDS})
        block = np.zeros((n, self.dim), dtype=self.dtype)
        ok = np.array([s == "ok" for s in batch["status"]], dtype=bool)
        if ok.any():
            vectors = prediction["vectors"]
            if vectors.dtype not in (torch.float16, torch.float32):  # bfloat16 has no numpy dtype
                vectors = vectors.float()  # exact: bfloat16 -> float32 loses nothing
            block[ok] = vectors.numpy()  # float32 -> store dtype, rounded once (or already)
        chunk.rows.append(block)
        for f in self._META_FIELDS:
            chunk.meta[f].extend(batch[f])
        chunk.filled += n
        chunk.encode_s += float(prediction["encode_s"])
        chunk.preprocess_s += float(sum(batch["seconds"]))
        if self.bar is not None:
            self.bar.update(n)
        size = self.plan.chunk_size(k)
        if (size is not None and chunk.filled == size) or (size is None and batch.get("last")):
            self._write(trainer, k, chunk, batch)

    def _write(self, trainer: pl.Trainer, k: int, chunk: _OpenChunk, batch: dict[str, Any]) -> None:
        meta: dict[str, Any] = {"chunk": k, **chunk.meta}
        meta.update(
            items=chunk.filled,
            valid=int(sum(s == "ok" for s in chunk.meta["status"])),
            wall_s=round(time.perf_counter() - chunk.t_start, 4),
            encode_s=round(chunk.encode_s, 4),
            preprocess_s=round(chunk.preprocess_s, 4),
            rank=int(trainer.global_rank),
            host=socket.gethostname(),
            worker=batch.get("worker"),
            run_id=self.state.get("run_id"),
            producer=self.producer,
        )
        for f in ("shard", "shard_sha256", "shard_bytes"):
            if f in batch:
                meta[f] = batch[f]
        rows = np.concatenate(chunk.rows) if chunk.rows else np.zeros((0, self.dim), self.dtype)
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmrec-part-writer")
        # in order, one at a time, off the forward's path; the .done marker is still written last
        self._writes.append(self._io.submit(write_part, self.plan.partial_dir, k, rows, meta))
        self.items_written += chunk.filled
        self.chunks_written.append(k)
        del self.open[k]

    def _check_writes(self) -> None:
        """Raise the error of a part write that failed (a full disk...), as soon as it is known."""
        while self._writes and self._writes[0].done():
            self._writes.pop(0).result()

    def _drain(self) -> None:
        """Wait for every part write submitted so far; raise the first error."""
        try:
            for f in self._writes:
                f.result()
        finally:
            self._writes.clear()
            if self._io is not None:
                self._io.shutdown(wait=True)
                self._io = None

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._receive(trainer, *pending)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._drain()  # every finished chunk is on disk before the ranks meet at the merge barrier

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        with contextlib.suppress(Exception):  # keep the chunks finished so far for the next run
            self._drain()
