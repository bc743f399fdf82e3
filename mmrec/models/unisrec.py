"""UniSRec (Hou et al., KDD 2022): items by their text through a mixture-of-experts adaptor.

Items are represented by frozen text (or any) features passed through UniSRec's MoE adaptor
(:class:`~mmrec.nn.moe_adaptor.MoEAdaptor`: parametric whitening experts with a noisy softmax gate), a causal
transformer encodes the history, and scores are cosines divided by a temperature (0.07), as in the paper.
``id_embedding: false`` is UniSRec's *inductive* setting (no item IDs: every item, seen in training or not,
is placed by its text), ``true`` the *transductive* one (text + a zero-initialised ID table). With IDs, items
that have no training interaction get no ID contribution (under full-softmax training their ID vector has only
been pushed away as a negative), so they fall back on their text.

This is the in-domain model (trained from scratch on one catalogue); the cross-domain pre-training and transfer
machinery is :class:`~mmrec.models.transferable.TransferableRecommender`'s, which this class extends.

Example:
    >>> cat = {"num_items": 5, "num_users": 2, "max_len": 4, "feature_dims": {"text": 6}}
    >>> m = UniSRec(catalog=cat, dim=8, num_layers=1, num_experts=2)
    >>> m.attach_item_features({"text": (torch.randn(6, 6), torch.ones(6, dtype=torch.bool))})
    >>> m.score_all({"input_ids": torch.tensor([[0, 1, 2]])}).shape
    torch.Size([1, 6])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmrec.models.base import LRSchedulerCallable, OptimizerCallable
from mmrec.models.registry import MODELS
from mmrec.models.transferable import ContentItemEncoder, TransferableRecommender
from mmrec.nn.feature_preprocess import Preprocess

#: constructor arguments saved with a pre-trained UniSRec (everything but the catalogue and the callables)
UNISREC_CONFIG_KEYS = (
    "dim",
    "num_layers",
    "num_heads",
    "dropout",
    "features",
    "num_experts",
    "id_embedding",
    "preprocess",
    "pca_dim",
    "temperature",
    "lr",
    "weight_decay",
    "eval_ks",
    "predict_k",
)


@MODELS.register("sequential/unisrec", tiny={"dim": 8, "num_layers": 1, "num_experts": 2})
class UniSRec(TransferableRecommender):
    """UniSRec: MoE-adapted frozen text features, cosine scores, optional ID embeddings.

    Args:
        catalog: ``datamodule.catalog`` (needs ``feature_dims``).
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout of the transformer and of the adaptor inputs.
        features: feature stores to use (default: all); several are adapted separately and summed.
        num_experts: experts of the MoE adaptor (paper: 8).
        id_embedding: add a per-item ID table (transductive setting); ``False`` = inductive (text only).
        preprocess: non-parametric preprocessing before the adaptor (``none`` as in the paper, or
            ``whiten`` / ``pca`` / ``center`` fitted on the catalogue).
        pca_dim: width kept by ``pca`` / ``whiten``.
        temperature: softmax temperature of the cosine scores.
        lr, weight_decay, eval_ks, predict_k, optimizer, lr_scheduler: as
            :class:`~mmrec.models.sequential.SequentialRecommender`.

    Shapes:
        ``item_vectors() -> (N+1, dim)`` (unit rows); ``score_all(batch) -> (B, N+1)``.
    """

    seen_items: torch.Tensor  # buffer (register_buffer in __init__): (N+1,) bool, items seen in training

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        features: list[str] | None = None,
        num_experts: int = 8,
        id_embedding: bool = False,
        preprocess: Preprocess = "none",
        pca_dim: int | None = None,
        temperature: float = 0.07,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(
            catalog=catalog,
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            features=features,
            fusion="sum",
            id_embedding=id_embedding,
            score="cosine",
            temperature=temperature,
            center_features="none",
            item_dropout=dropout,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.save_hyperparameters()
        available = dict(self.catalog.get("feature_dims") or {})
        self.items = ContentItemEncoder(
            domain_ranges=self.domain_ranges,
            center=False,
            normalize=True,
            num_items=self.num_items,
            dim=dim,
            feature_dims={n: available[n] for n in self.feature_names},
            fusion="sum",
            use_id_embedding=False,
            dropout=dropout,
            preprocess=preprocess,
            pca_dim=pca_dim,
            projector="moe",
            num_experts=num_experts,
        )
        self.register_buffer("seen_items", torch.ones(self.num_items + 1, dtype=torch.bool), persistent=False)

    def model_config(self) -> dict[str, Any]:
        """UniSRec's own constructor arguments (``num_experts``, ``preprocess``, ``pca_dim``... included), what
        :meth:`from_pretrained` rebuilds it from."""
        hp = dict(self.hparams)
        return {
            k: (list(hp[k]) if isinstance(hp[k], tuple) else hp[k]) for k in UNISREC_CONFIG_KEYS if k in hp
        }

    @classmethod
    def complete_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """UniSRec configs are complete as saved (the transferable model's legacy defaults do not apply)."""
        return saved

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """As the base class, plus which items have training interactions (``inputs["train_interactions"]``),
        so that ID embeddings only act on those."""
        super().attach_data(inputs)
        if self.item_ids is not None and "train_interactions" in inputs:
            counts = np.asarray(inputs["train_interactions"].sum(axis=0)).ravel()
            self.seen_items.copy_(torch.as_tensor(counts > 0))

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, dim)`` unit rows: adapted content (+ ID embedding for items seen in training)."""
        items = self.items()
        if self.item_ids is not None:
            items = items + self.item_ids() * self.seen_items.unsqueeze(-1).to(items.dtype)
        return F.normalize(items, dim=-1)
