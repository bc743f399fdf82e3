"""GRU4Rec (Hidasi et al., 2016) in the form RecBole trains it: item embedding -> dropout -> GRU -> a linear
map back to the embedding space, scored against every item (full-softmax cross-entropy by default).

Sequences arrive left-padded (the datamodule keeps the most recent item in the last column). A GRU would
carry the padding steps into its state, so each row is shifted to start at column 0 and packed
(``pack_padded_sequence``): the GRU sees only real items, and a history gives the same query whatever
padding surrounds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmrec.models.base import LRSchedulerCallable, OptimizerCallable, RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.nn.losses import LossName, NegativeSampling, NextItemLoss


def left_to_front(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's last ``lengths[b]`` entries (left padding) to the front (right padding).

    Args:
        x: ``(B, L, ...)`` left-padded rows.
        lengths: ``(B,)`` real entries per row.

    Returns:
        ``(B, L, ...)``: row ``b`` holds its real entries in columns ``0..lengths[b]-1``, zeros after.

    Example:
        >>> left_to_front(torch.tensor([[0, 0, 7, 8]]), torch.tensor([2])).tolist()
        [[7, 8, 0, 0]]
    """
    return _shift(x, lengths, to_front=True)


def front_to_left(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`left_to_front`: real entries back to the last ``lengths[b]`` columns.

    Example:
        >>> front_to_left(torch.tensor([[7, 8, 0, 0]]), torch.tensor([2])).tolist()
        [[0, 0, 7, 8]]
    """
    return _shift(x, lengths, to_front=False)


def _shift(x: torch.Tensor, lengths: torch.Tensor, *, to_front: bool) -> torch.Tensor:
    b, length = x.shape[:2]
    pad = (length - lengths).to(x.device)[:, None]  # (B, 1)
    cols = torch.arange(length, device=x.device)[None]  # (1, L)
    src = (cols + pad) % length if to_front else (cols - pad) % length
    valid = cols < (length - pad) if to_front else cols >= pad
    index = src.view(b, length, *([1] * (x.dim() - 2))).expand_as(x)
    out = torch.gather(x, 1, index)
    return out * valid.view(b, length, *([1] * (x.dim() - 2))).to(out.dtype)


@MODELS.register(
    "sequential/gru4rec",
    tiny={"embedding_dim": 16, "hidden_size": 16, "num_layers": 1, "dropout": 0.1},
)
class GRU4Rec(RecommenderModule):
    """GRU4Rec: a GRU over the item sequence; the last hidden state (mapped to the embedding size) is the
    query, items are their ID embeddings.

    Args:
        catalog: from the datamodule (``num_items``, ``num_users``); linked by the CLI.
        embedding_dim: item embedding size (= query size).
        hidden_size: GRU hidden size.
        num_layers: stacked GRU layers.
        dropout: dropout on the item embeddings fed to the GRU (RecBole's ``dropout_prob``); also between
            GRU layers when ``num_layers > 1``.
        loss: ``ce`` (full softmax, RecBole's default for GRU4Rec), ``bce`` (one sampled negative per
            positive), ``sampled`` (sampled softmax, logQ-corrected) or ``inbatch``, see :mod:`mmrec.nn.losses`.
        num_negatives, negative_sampling, logq_correction: options of ``sampled`` / ``inbatch``.
        lr: learning rate of the default AdamW.
        weight_decay: weight decay of the default AdamW.
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
        optimizer, lr_scheduler: injected training callables (default ``AdamW(lr, weight_decay)``, constant rate);
            see :class:`~mmrec.models.base.RecommenderModule`.

    Example:
        >>> m = GRU4Rec(catalog={"num_items": 10, "num_users": 3}, embedding_dim=8, hidden_size=12)
        >>> m.query_vectors({"input_ids": torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])}).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        embedding_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
        loss: LossName = "ce",
        num_negatives: int = 256,
        negative_sampling: NegativeSampling = "uniform",
        logq_correction: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(
            catalog=catalog,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        if min(embedding_dim, hidden_size, num_layers) < 1:
            raise ValueError(
                f"embedding_dim, hidden_size and num_layers must be >= 1, got {embedding_dim}, "
                f"{hidden_size}, {num_layers}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.save_hyperparameters()
        self.item_embedding = nn.Embedding(self.num_items + 1, embedding_dim, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            bias=False,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dense = nn.Linear(hidden_size, embedding_dim)
        self.next_item_loss = NextItemLoss(
            loss,
            self.num_items,
            num_negatives=num_negatives,
            negative_sampling=negative_sampling,
            logq_correction=logq_correction,
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # RecBole's GRU4Rec: xavier-normal embeddings, xavier-uniform recurrent / input weights
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, param in self.gru.named_parameters():
            if name.startswith("weight_"):
                nn.init.xavier_uniform_(param)

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """What the loss samples negatives from (:meth:`~mmrec.nn.losses.NextItemLoss.attach`)."""
        self.next_item_loss.attach(inputs)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight

    def _run_gru(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GRU over the real items only: ``(outputs (B, L, H) front-aligned, last (B, H), lengths (B,))``."""
        lengths = (input_ids != 0).sum(dim=1)
        front = left_to_front(input_ids, lengths)
        x = self.emb_dropout(self.item_embedding(front))
        # an empty history runs one step over the padding embedding (zeros): a fixed, history-free query
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return out, h_n[-1], lengths

    def sequence_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L, d)`` query after each item of left-padded ``input_ids (B, L)``; 0 at padding."""
        out, _, lengths = self._run_gru(input_ids)
        return front_to_left(self.dense(out), lengths)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        _, last, _ = self._run_gru(batch["input_ids"])
        return self.dense(last)

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The next-item loss at every position with a target (teacher forcing over the window)."""
        hidden = self.sequence_hidden(batch["input_ids"])
        return self.next_item_loss(
            hidden,
            self.item_vectors(),
            batch["target_ids"],
            users=batch.get("user"),
            seen=batch["input_ids"],
        )
