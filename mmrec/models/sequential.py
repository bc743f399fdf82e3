"""Sequential recommenders: SASRec (IDs only) and a multimodal variant fusing frozen item features.

Both encode a user's recent items with a causal transformer and score the next item against every item of
the catalogue (full-softmax cross-entropy for training, full ranking for evaluation). They differ only in
the item representation (:class:`~mmrec.nn.item_encoder.ItemEncoder`): SASRec uses ID embeddings, the
multimodal model fuses them with projected features from one or more embedding stores (``sum``,
``concat`` or ``gated``), or uses the features alone (``use_id_embedding: false``) for cold items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmrec.models.base import LRSchedulerCallable, OptimizerCallable, RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.nn.feature_preprocess import Preprocess
from mmrec.nn.item_encoder import Fusion, IdInit, ItemEncoder, Projector
from mmrec.nn.losses import LossName, NegativeSampling, NextItemLoss
from mmrec.nn.sequence_encoder import CausalTransformer


class SequentialRecommender(RecommenderModule):
    """Causal-transformer next-item model over an :class:`ItemEncoder`.

    Args:
        catalog: from the datamodule (``num_items``, ``num_users``, ``feature_dims``); linked by the CLI.
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout rate.
        features: which of the datamodule's feature stores to use (default: all of them; ``[]`` = none).
        fusion: ``sum`` / ``concat`` / ``gated`` / ``adaptive`` (popularity-aware ID-vs-content gate)
            combination of ID embedding and features (:class:`~mmrec.nn.item_encoder.ItemEncoder`).
        use_id_embedding: learn an ID embedding per item (False = content-only items).
        preprocess: ``none`` / ``center`` / ``pca`` / ``whiten`` of each frozen table, fitted on the catalogue.
        pca_dim: width kept by ``pca`` / ``whiten`` (``None`` = the feature width).
        projector: ``mlp`` or ``moe`` (UniSRec's mixture of parametric-whitening experts).
        num_experts: experts of ``projector: moe``.
        id_init: ``random`` or ``content`` (ID embeddings start from a PCA of the content).
        modality_dropout: per-item probability of dropping each source (ID or modality) in training.
        unseen_content_only: items without training interactions get no ID contribution (content only).
        position_std: initial std of the position embeddings (``None`` = ``dim ** -0.5``, the scale of the
            ID embeddings; see :class:`~mmrec.models.sequence_encoder.CausalTransformer`).
        loss: ``ce`` (full-softmax cross-entropy), ``bce`` (one sampled negative per positive, never one
            of the user's training items; the original SASRec loss), ``sampled`` (sampled softmax with logQ
            correction, for large catalogues) or ``inbatch`` (in-batch negatives), see :mod:`mmrec.nn.losses`.
        num_negatives: negatives per batch of ``loss: sampled``.
        negative_sampling: ``uniform`` or ``popularity`` (training counts) negatives of ``loss: sampled``.
        logq_correction: subtract the log sampling probability from the logits (``sampled``, ``inbatch``).
        lr: learning rate of the default AdamW.
        weight_decay: weight decay of the default AdamW.
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
        optimizer, lr_scheduler: injected training callables (default ``AdamW(lr, weight_decay)``, constant rate);
            see :class:`~mmrec.models.base.RecommenderModule`.
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        features: list[str] | None = None,
        fusion: Fusion = "sum",
        use_id_embedding: bool = True,
        position_std: float | None = None,
        loss: LossName = "ce",
        num_negatives: int = 256,
        negative_sampling: NegativeSampling = "uniform",
        logq_correction: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        preprocess: Preprocess = "none",
        pca_dim: int | None = None,
        projector: Projector = "mlp",
        num_experts: int = 8,
        id_init: IdInit = "random",
        modality_dropout: float = 0.0,
        unseen_content_only: bool = False,
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
        self.save_hyperparameters()
        available = dict(self.catalog.get("feature_dims") or {})
        chosen = sorted(available) if features is None else list(features)
        unknown = [f for f in chosen if f not in available]
        if unknown:
            raise ValueError(
                f"model.features names {unknown}, but the datamodule provides {sorted(available) or 'no features'}; "
                "add them to data.init_args.stores (name: store path) or fix the names."
            )
        self.feature_names = chosen
        self.items = ItemEncoder(
            num_items=self.num_items,
            dim=dim,
            feature_dims={n: available[n] for n in chosen},
            fusion=fusion,
            use_id_embedding=use_id_embedding,
            dropout=dropout,
            preprocess=preprocess,
            pca_dim=pca_dim,
            projector=projector,
            num_experts=num_experts,
            id_init=id_init,
            modality_dropout=modality_dropout,
            unseen_content_only=unseen_content_only,
        )
        self.encoder = CausalTransformer(
            dim=dim, num_layers=num_layers, num_heads=num_heads, dropout=dropout, position_std=position_std
        )
        self.next_item_loss = NextItemLoss(
            loss,
            self.num_items,
            num_negatives=num_negatives,
            negative_sampling=negative_sampling,
            logq_correction=logq_correction,
        )

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Attach the frozen feature tables this model uses (``inputs["features"]``; not in checkpoints), the
        items' training popularity when the fusion uses it (``inputs["train_interactions"]``) and what the loss
        samples negatives from (``bce``: the users' training items; ``sampled`` by popularity: the training
        counts), see :meth:`~mmrec.nn.losses.NextItemLoss.attach`. Items withheld by a cold-item split
        (``inputs["withheld_items"]``) are left out of the training softmax / ``bce`` negatives."""
        if self.feature_names and not self.items.features_attached:
            tables = inputs["features"]
            self.attach_item_features({n: tables[n] for n in self.feature_names})
        uses_popularity = self.items.fusion == "adaptive" or self.items.unseen_content_only
        if uses_popularity and not self.items.popularity_attached and "train_interactions" in inputs:
            counts = np.asarray(inputs["train_interactions"].sum(axis=0)).ravel()
            self.items.attach_popularity(torch.as_tensor(counts, dtype=torch.float32))
        if "withheld_items" in inputs:  # cold-item split: those items do not exist at training time
            withheld = inputs["withheld_items"]
            if withheld:
                self.next_item_loss.exclude_items(withheld)
        self.next_item_loss.attach(inputs)

    def attach_item_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attach frozen feature tables ``name -> (features (N+1, D), valid (N+1,))`` (for use outside a Trainer)."""
        self.items.attach_features(tables)

    def item_vectors(self) -> torch.Tensor:
        return self.items()

    def sequence_hidden(
        self, input_ids: torch.Tensor, item_vecs: torch.Tensor | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """``(B, L, d)`` hidden states of left-padded ``input_ids (B, L)``; ``(B, 1, d)``, the last position
        only, with ``last_only`` (computed alone in the last block unless adapters hook the encoder)."""
        items = item_vecs if item_vecs is not None else self.item_vectors()
        if last_only and _plain(self.encoder):
            return self.encoder(items[input_ids], input_ids, last_only=True)
        hidden = self.encoder(items[input_ids], input_ids)
        return hidden[:, -1:] if last_only else hidden

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        item_vecs = self._cached_items if (self._cached_items is not None and not self.training) else None
        # inside an evaluation / predict epoch (item vectors cached), the last block computes the last position
        # only: the same values up to float rounding (other matrix shapes), so outside it, where callers compare
        # scores bit for bit (adapters at identity), the full forward is kept
        last_only = item_vecs is not None
        return self.sequence_hidden(batch["input_ids"], item_vecs, last_only=last_only)[:, -1]

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The next-item loss (``loss``: CE over the catalogue or sampled BCE) at every non-padded position."""
        items = self.item_vectors()
        hidden = self.sequence_hidden(batch["input_ids"], items)
        return self.next_item_loss(
            hidden, items, batch["target_ids"], users=batch.get("user"), seen=batch["input_ids"]
        )


def _plain(encoder: torch.nn.Module) -> bool:
    """True when nothing hooks or replaces the encoder's or its blocks' forward (adapters do: head/linear
    hooks the encoder output, side/iisan replaces its forward, prompts hook the blocks), so that its
    ``last_only`` path computes what the hooked full forward would."""
    if "forward" in vars(encoder) or encoder._forward_hooks or encoder._forward_pre_hooks:
        return False
    blocks = getattr(encoder, "blocks", ())
    return all(not (b._forward_hooks or b._forward_pre_hooks or "forward" in vars(b)) for b in blocks)


@MODELS.register("sequential/sasrec", tiny={"dim": 8, "num_layers": 1})
class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley, 2018): ID embeddings only; full-softmax cross-entropy (``loss: ce``, default)
    or the paper's binary cross-entropy with one sampled negative per positive (``loss: bce``).

    Args: as :class:`SequentialRecommender`, without feature options.

    Example:
        >>> m = SASRec(catalog={"num_items": 10, "num_users": 3, "max_len": 5}, dim=16, num_layers=1)
        >>> m.query_vectors({"input_ids": torch.tensor([[0, 1, 2, 3, 4]])}).shape
        torch.Size([1, 16])
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        position_std: float | None = None,
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
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            features=[],
            fusion="sum",
            use_id_embedding=True,
            position_std=position_std,
            loss=loss,
            num_negatives=num_negatives,
            negative_sampling=negative_sampling,
            logq_correction=logq_correction,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )


@MODELS.register("sequential/multimodal", tiny={"dim": 8, "num_layers": 1})
class MultimodalSequential(SequentialRecommender):
    """Multimodal sequential recommender: ID embedding fused with projected frozen features.

    Same arguments as :class:`SequentialRecommender`; by default uses every feature store of the
    datamodule with gated fusion. The options that make content pay on cold and tail items (whitening,
    ``fusion: adaptive``, ``id_init: content``, ``modality_dropout``, ``unseen_content_only``) are off by
    default so earlier recipes train as before; ``configs/bench/*cold*.yaml`` use them.

    Example:
        >>> cat = {"num_items": 4, "num_users": 2, "max_len": 3, "feature_dims": {"image": 6}}
        >>> m = MultimodalSequential(catalog=cat, dim=8, num_layers=1)
        >>> m.attach_item_features({"image": (torch.randn(5, 6), torch.ones(5, dtype=torch.bool))})
        >>> m.query_vectors({"input_ids": torch.tensor([[0, 1, 2]])}).shape
        torch.Size([1, 8])
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        features: list[str] | None = None,
        fusion: Fusion = "gated",
        use_id_embedding: bool = True,
        position_std: float | None = None,
        loss: LossName = "ce",
        num_negatives: int = 256,
        negative_sampling: NegativeSampling = "uniform",
        logq_correction: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        preprocess: Preprocess = "none",
        pca_dim: int | None = None,
        projector: Projector = "mlp",
        num_experts: int = 8,
        id_init: IdInit = "random",
        modality_dropout: float = 0.0,
        unseen_content_only: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if not (catalog or {}).get("feature_dims"):
            raise ValueError(
                "MultimodalSequential needs feature stores: set data.init_args.stores (name: store path); "
                "for an ID-only model use mmrec.models.SASRec."
            )
        super().__init__(
            catalog=catalog,
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            features=features,
            fusion=fusion,
            use_id_embedding=use_id_embedding,
            position_std=position_std,
            loss=loss,
            num_negatives=num_negatives,
            negative_sampling=negative_sampling,
            logq_correction=logq_correction,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            preprocess=preprocess,
            pca_dim=pca_dim,
            projector=projector,
            num_experts=num_experts,
            id_init=id_init,
            modality_dropout=modality_dropout,
            unseen_content_only=unseen_content_only,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
