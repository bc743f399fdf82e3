"""Lightning side of ``mmrec embed``: the module that encodes, the datamodule that deals chunks to ranks,
and the prediction writer that turns finished chunks into part files.

Imported only on a cache miss (Lightning is slow to import; a cache hit never needs it).

- :class:`EmbedModule`: ``predict_step`` encodes the valid items of a batch -> ``(n_valid, D)`` on CPU
  (a batch of only failures gives a ``(0, D)`` tensor without calling the encoder).
- :class:`EmbedDataModule`: in ``setup`` rank 0 lists the chunks still to do (parts without a ``.done``
  marker) and broadcasts the list; each rank takes every ``world_size``-th chunk of it and iterates
  them in fixed batches (:class:`~mmrec.embedding.data.ChunkBatchSampler`).
- :class:`PartWriter`: a ``BasePredictionWriter`` (``write_interval="batch"``) that fills the current
  chunk's rows and writes its part files once every item of the chunk has been seen; with ``strict`` the
  first failed item raises :class:`EmbedError`.

Example:
    >>> import lightning.pytorch as pl  # doctest: +SKIP
    >>> trainer = pl.Trainer(use_distributed_sampler=False, callbacks=[PartWriter(plan, "float16", 64)])  # doctest: +SKIP
    >>> trainer.predict(EmbedModule(encoder), datamodule=EmbedDataModule(dataset, plan, 64, 2, collate))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from mmrec.embedding.config import EmbedError
from mmrec.embedding.data import ChunkBatchSampler, Collator, ItemDataset, assign_chunks
from mmrec.embedding.parts import PartPlan, write_part


class EmbedModule(pl.LightningModule):
    """Wraps a frozen encoder for ``Trainer.predict``.

    Args:
        encoder: a :class:`~mmrec.encoders.base.FrozenEncoder`.
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Encode the batch's valid items.

        Returns:
            ``{"vectors": (n_valid, D) float32 CPU tensor, "encode_s": seconds}``.
        """
        t0 = time.perf_counter()
        n_ok = sum(s == "ok" for s in batch["status"])
        if batch["inputs"] is None:
            vectors = torch.zeros(0, int(self.encoder.output_dim))
        else:
            vectors = self.encoder.encode(batch["inputs"]).float().cpu()
        if vectors.shape[0] != n_ok:
            raise EmbedError(f"{self.encoder.name} returned {vectors.shape[0]} rows for {n_ok} items.")
        return {"vectors": vectors, "encode_s": time.perf_counter() - t0}


class EmbedDataModule(pl.LightningDataModule):
    """Decides (rank 0, broadcast) which chunks are still to do and deals them round-robin to ranks.

    After ``setup``, :attr:`state` holds ``todo`` (all chunks to do in this run), ``mine`` (this rank's),
    ``run_id``, ``rank`` and ``world_size``.

    Args:
        dataset: the item dataset.
        plan: the chunking.
        batch_size: items per forward pass.
        num_workers: DataLoader workers.
        collate: the collator.
        todo: the chunks to do, when rank 0 already listed them before the processes started (else
            rank 0 lists them in ``setup``).
    """

    def __init__(
        self,
        dataset: ItemDataset,
        plan: PartPlan,
        batch_size: int,
        num_workers: int,
        collate: Collator,
        todo: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.todo_hint = todo
        self.dataset = dataset
        self.plan = plan
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate = collate
        self.state: dict[str, Any] = {}

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        assert trainer is not None
        payload = None
        if trainer.is_global_zero:
            todo = self.todo_hint if self.todo_hint is not None else self.plan.prepare()
            payload = {"todo": todo, "run_id": uuid.uuid4().hex[:12]}
        payload = trainer.strategy.broadcast(payload, src=0)
        self.state.update(
            todo=list(payload["todo"]),
            run_id=payload["run_id"],
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            mine=assign_chunks(payload["todo"], trainer.global_rank, trainer.world_size),
        )

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        pin = bool(trainer is not None and trainer.strategy.root_device.type == "cuda")
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=ChunkBatchSampler(
                self.state["mine"], self.plan.shard_size, self.plan.num_items, self.batch_size
            ),
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=pin,
        )


class PartWriter(BasePredictionWriter):
    """Accumulates a chunk's rows batch by batch and writes its part files when the chunk is complete.

    Args:
        plan: the chunking (part folder, chunk size).
        dtype: store dtype of the rows (``float16`` / ``float32``).
        dim: encoder output size.
        strict: raise :class:`EmbedError` on the first failed item (naming item, file, reason).
        desc: label of the progress bar.
        progress: show a tqdm bar with items/s on rank 0.
        state: the datamodule's :attr:`EmbedDataModule.state` (this rank's chunks, run id).
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
    ) -> None:
        super().__init__(write_interval="batch")
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.dim = dim
        self.strict = strict
        self.desc = desc
        self.progress = progress
        self.state = state if state is not None else {}
        self.chunk: int | None = None
        self.bar: Any = None
        self.items_written = 0

    def _start_chunk(self, k: int) -> None:
        n = self.plan.chunk_size(k)
        self.chunk = k
        self.rows = np.zeros((n, self.dim), dtype=self.dtype)
        self.filled = 0
        self.meta: dict[str, Any] = {"chunk": k, **{f: [None] * n for f in self._META_FIELDS}}
        self.t_start = time.perf_counter()
        self.encode_s = 0.0
        self.preprocess_s = 0.0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state["loop_started"] = time.perf_counter()
        if self.progress and trainer.is_global_zero:
            from tqdm.auto import tqdm

            total = sum(self.plan.chunk_size(k) for k in self.state.get("mine", []))
            suffix = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
            self.bar = tqdm(
                total=total,
                desc=f"embed {self.desc}{suffix}",
                unit="item",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def on_predict_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        k = batch["index"][0] // self.plan.shard_size
        if self.chunk != k:
            self._start_chunk(k)

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
        assert self.chunk is not None
        k = self.chunk
        start, _ = self.plan.chunk_range(k)
        if self.strict:
            self._check_strict(batch)
        vectors = prediction["vectors"].numpy().astype(self.dtype)
        j = 0
        for pos, idx in enumerate(batch["index"]):
            off = idx - start
            if batch["status"][pos] == "ok":
                self.rows[off] = vectors[j]
                j += 1
            for f in self._META_FIELDS:
                self.meta[f][off] = batch[f][pos]
        self.filled += len(batch["index"])
        self.encode_s += float(prediction["encode_s"])
        self.preprocess_s += float(sum(batch["seconds"]))
        if self.bar is not None:
            self.bar.update(len(batch["index"]))
        if self.filled == self.plan.chunk_size(k):
            self.meta.update(
                items=self.filled,
                valid=int(sum(s == "ok" for s in self.meta["status"])),
                wall_s=round(time.perf_counter() - self.t_start, 4),
                encode_s=round(self.encode_s, 4),
                preprocess_s=round(self.preprocess_s, 4),
                rank=int(trainer.global_rank),
                run_id=self.state.get("run_id"),
            )
            write_part(self.plan.partial_dir, k, self.rows, self.meta)
            self.items_written += self.filled
            self.chunk = None

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.on_predict_end(trainer, pl_module)
