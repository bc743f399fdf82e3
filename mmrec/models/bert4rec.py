"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained with the cloze task.

Training: each training window (the history plus its next item, at most ``max_len + 1`` items) has every
real item replaced by the ``[MASK]`` token (id ``N + 1``) with probability ``mask_prob`` (a row where
nothing was drawn gets its last item masked, the task evaluation asks), and the model predicts the
original items at the masked positions with cross-entropy over the catalogue (RecBole's BERT4Rec).
Evaluation: ``[MASK]`` is appended after the history and its output is the query.

Training windows: the next-item task is posed at the last item of each window only, so BERT4Rec asks the
datamodule for windows at stride 1 (every prefix of a user's training sequence is a window, RecBole's
augmentation; :class:`~mmrec.protocols.TrainingWindowPreference`) unless ``window_stride`` is set. With the
default non-overlapping windows a demo user of 10 items posed 1 of its 9 next-item targets per epoch, and the
model never left popularity level on the demo (validation NDCG@10 0.07-0.09 over 100 epochs, MostPop 0.092;
stride 1: 0.12 after 15 epochs).

Items are scored as ``h . e_i + b_i`` (output bias per item, as in RecBole); the bias is folded into the
vectors (:meth:`BERT4Rec.item_vectors` = ``[e_i, b_i]``, queries ``[h, 1]``) so scoring stays an inner
product and a faiss index serves the model unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmrec.models.base import LRSchedulerCallable, OptimizerCallable, RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.nn.bidirectional_encoder import BidirectionalTransformer
from mmrec.nn.losses import LossName, NegativeSampling, NextItemLoss


def cloze_mask(
    seq: torch.Tensor,
    mask_id: int,
    mask_prob: float,
    *,
    last_only_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask real items of left-padded sequences for the cloze task.

    Each real item (``> 0``) is replaced by ``mask_id`` with probability ``mask_prob``; a row with no
    masked item gets its last item masked. With probability ``last_only_prob`` a row instead has only its
    last item masked: the evaluation task (``[MASK]`` after the history, nothing to its right), which the
    random cloze alone poses for about ``mask_prob`` of the windows (RecBole's ``ft_ratio``). Padding is
    never masked.

    Args:
        seq: ``(B, L)`` item indices, 0 = padding, last column real for every non-empty row.
        mask_id: the ``[MASK]`` token id.
        mask_prob: masking probability.
        last_only_prob: probability that a row is a next-item row (only its last item masked).
        generator: optional torch generator (default: the global RNG).

    Returns:
        ``(inputs (B, L), labels (B, L))``: ``labels`` holds the original item at masked positions, 0 elsewhere.

    Example:
        >>> inputs, labels = cloze_mask(torch.tensor([[0, 4, 5]]), mask_id=9, mask_prob=0.0)
        >>> inputs.tolist(), labels.tolist()
        ([[0, 4, 9]], [[0, 0, 5]])
    """
    real = seq > 0
    draw = torch.rand(seq.shape, generator=generator, device=seq.device) < mask_prob
    masked = real & draw
    if last_only_prob > 0.0:
        last_only = torch.rand(seq.shape[0], generator=generator, device=seq.device) < last_only_prob
        masked[last_only] = False
    none = ~masked.any(dim=1)
    masked[:, -1] |= none & real[:, -1]
    labels = torch.where(masked, seq, torch.zeros_like(seq))
    inputs = torch.where(masked, torch.full_like(seq, mask_id), seq)
    return inputs, labels


@MODELS.register(
    "sequential/bert4rec",
    tiny={"dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.1, "mask_prob": 0.3},
)
class BERT4Rec(RecommenderModule):
    """BERT4Rec: bidirectional transformer over ID embeddings, cloze training, ``[MASK]``-query evaluation.

    Args:
        catalog: from the datamodule (``num_items``, ``num_users``, ``max_len``); linked by the CLI.
        dim: hidden size (= item embedding size).
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout on embeddings, attention and feed-forward.
        mask_prob: probability of masking each training item (RecBole's ``mask_ratio``).
        ft_ratio: share of training windows that mask only their last item, the task evaluation asks
            (RecBole's ``ft_ratio``, 0.5 there too). With 0 the model meets a ``[MASK]`` with no right-hand
            context in about ``mask_prob`` of the windows and ranks by popularity at evaluation.
        embedding_std: std of the initial item, ``[MASK]`` and position embeddings (``None`` = ``dim ** -0.5``,
            unit-norm rows as SASRec's). BERT's 0.02 (norm 0.16 at ``dim=64``) makes every score
            ``h . e_i`` tiny beside the output bias, which learns popularity first: the model ranked every
            user alike (same top-10 for 64% of the demo's users) and had not left that state when early
            stopping ended it. Linear layers keep BERT's N(0, 0.02).
        loss: the cloze loss at the masked positions, ``ce`` (full softmax, default), ``bce``, ``sampled`` or
            ``inbatch`` (see :mod:`mmrec.nn.losses`).
        num_negatives, negative_sampling, logq_correction: options of ``sampled`` / ``inbatch``.
        lr: learning rate of the default AdamW.
        weight_decay: weight decay of the default AdamW.
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
        optimizer, lr_scheduler: injected training callables (default ``AdamW(lr, weight_decay)``, constant rate);
            see :class:`~mmrec.models.base.RecommenderModule`.

    Attributes:
        preferred_window_stride: 1, the training-window stride asked of the datamodule (see the module doc).

    Example:
        >>> m = BERT4Rec(catalog={"num_items": 10, "num_users": 3, "max_len": 4}, dim=8, num_layers=1)
        >>> m.query_vectors({"input_ids": torch.tensor([[0, 0, 3, 4]])}).shape  # dim + 1 (bias column)
        torch.Size([1, 9])
    """

    #: every prefix a training window (the next-item task is posed at each window's last item only)
    preferred_window_stride: int = 1

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        mask_prob: float = 0.2,
        ft_ratio: float = 0.5,
        embedding_std: float | None = None,
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
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}.")
        if not 0.0 <= ft_ratio <= 1.0:
            raise ValueError(f"ft_ratio must be in [0, 1] (RecBole: 0.5), got {ft_ratio}.")
        if embedding_std is not None and embedding_std <= 0:
            raise ValueError(f"embedding_std must be > 0 (None = dim ** -0.5), got {embedding_std}.")
        self.save_hyperparameters()
        # the catalogue's history length; the encoder has one more position (history + the appended
        # [MASK], or a training window = history + its next item)
        self.max_len = int(self.catalog.get("max_len", 50))
        self.mask_prob = mask_prob
        self.ft_ratio = ft_ratio
        self.mask_id = self.num_items + 1
        self.item_embedding = nn.Embedding(self.num_items + 2, dim, padding_idx=0)  # + [MASK]
        self.encoder = BidirectionalTransformer(
            dim=dim, num_layers=num_layers, num_heads=num_heads, max_len=self.max_len + 1, dropout=dropout
        )
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.output_bias = nn.Parameter(torch.zeros(self.num_items + 1))
        self.next_item_loss = NextItemLoss(
            loss,
            self.num_items,
            num_negatives=num_negatives,
            negative_sampling=negative_sampling,
            logq_correction=logq_correction,
        )
        self.apply(_bert_init)
        self.embedding_std = float(dim**-0.5 if embedding_std is None else embedding_std)
        for table in (self.item_embedding, self.encoder.positions):
            nn.init.normal_(table.weight, std=self.embedding_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """What the loss samples negatives from (:meth:`~mmrec.nn.losses.NextItemLoss.attach`)."""
        self.next_item_loss.attach(inputs)

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, dim+1)``: item embeddings with the output bias as the last column ([MASK] excluded)."""
        return torch.cat([self.item_embedding.weight[: self.num_items + 1], self.output_bias[:, None]], dim=1)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L, dim+1)`` output queries of token ids ``(B, L)`` (items, 0 padding, ``mask_id``)."""
        hidden = self.head(self.encoder(self.item_embedding(ids), ids))
        return torch.cat([hidden, torch.ones_like(hidden[..., :1])], dim=-1)

    def with_mask_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Append ``[MASK]`` after each left-padded history: ``(B, L)`` -> ``(B, L+1)``."""
        if input_ids.shape[1] > self.max_len:
            input_ids = input_ids[:, -self.max_len :]
        return torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.mask_id)], dim=1)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(self.with_mask_token(batch["input_ids"]))[:, -1]

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The cloze loss (``loss``; full-softmax CE by default) at the masked positions of each window."""
        # the window = history + its last next item (target_ids[:, -1] is the window's last item)
        seq = torch.cat([batch["input_ids"], batch["target_ids"][:, -1:]], dim=1)
        inputs, labels = cloze_mask(seq, self.mask_id, self.mask_prob, last_only_prob=self.ft_ratio)
        return self.next_item_loss(self.encode(inputs), self.item_vectors(), labels, seen=seq)


def _bert_init(module: nn.Module) -> None:
    # Zero biases and LayerNorm at identity as BERT / RecBole, but linear weights N(0, 1/fan_in), not BERT's
    # N(0, 0.02): with unit-norm item / [MASK] / position rows (``embedding_std``), 0.02 shrinks each linear's
    # output ~6x at dim 64, so the attention path (values -> output projection, ~40x smaller) adds almost
    # nothing to the [MASK] position's residual stream, whose [MASK] + position part is the same for every
    # user: every user got the same top-10 (tests/test_model_zoo.py, the demo harness).
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
