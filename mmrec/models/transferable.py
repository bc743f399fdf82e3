"""A transferable sequential recommender: items by frozen content features, pre-trained across domains.

:class:`TransferableRecommender` is a :class:`~mmrec.models.sequential.SequentialRecommender` with
content-only items (an :class:`~mmrec.nn.item_encoder.ItemEncoder` over frozen feature stores, no item ID
embedding in the transferable part) and a causal transformer over the sequence, plus what cross-domain
training needs:

- **in-domain softmax**: with a multi-domain catalogue (``catalog["domains"]`` from
  :class:`~mmrec.datamodules.multidomain.MultiDomainDataModule`), the training softmax of a position runs over
  the items of its target's domain only, and evaluation ranks each user among their own domain's items
  (other domains' columns score ``-inf``), so domains do not trivially separate;
- optional **per-domain ID embeddings** (``id_embedding=True``): a zero-initialised table over the catalogue
  added to the content vectors. It is catalogue-specific: :meth:`backbone_state_dict` leaves it out, and a
  target model starts a fresh (zero) table that trains under every transfer strategy;
- :meth:`save_pretrained` / :meth:`from_pretrained`: a plain ``{"config", "state_dict"}`` file loaded with
  ``torch.load(weights_only=True)``, re-sized for another catalogue.

What makes the content representation *transfer* (each one measured on the real Beauty + ML-100k ->
Instruments recipe, where the earlier model was no better than random zero-shot):

- ``center_features="domain"``: each domain's feature vectors are centred on that domain's mean (computed over
  the catalogue's own valid items when the features are attached). Sentence-encoder embeddings of one domain
  share a large common component (all "guitar" titles, all "lipstick" titles); without centring, the target's
  items sit in a region of the input space the item projector never saw in pre-training.
- ``score="cosine"``: queries and items are L2-normalised and logits divided by ``temperature`` (as in
  UniSRec). With dot products, the projector learns a source-specific popularity prior in the item *norms*
  (and the query collapses onto one direction), which on a new catalogue becomes a confident, random ranking.
- ``input_scale`` (default ``sqrt(dim)``): item vectors are scaled before the position embeddings are added.
  Unit-norm items against ``N(0, 1)`` position embeddings (norm ``~sqrt(dim)``) would leave the content a small
  perturbation of the position signal, so every user's query would be nearly the same vector.
- ``item_dropout`` (default 0): dropout inside the item projector perturbs the whole candidate table of the
  softmax every step (the sequence encoder still applies ``dropout`` to its inputs).

Files saved before these options existed (no ``score`` key in their config) load with the old behaviour
(:data:`LEGACY_CONFIG`).

Example:
    >>> cat = {"num_items": 5, "num_users": 2, "feature_dims": {"text": 6},
    ...        "domains": [{"name": "a", "offset": 0, "num_items": 2}, {"name": "b", "offset": 2, "num_items": 3}]}
    >>> m = TransferableRecommender(catalog=cat, dim=8, num_layers=1)
    >>> m.attach_item_features({"text": (torch.randn(6, 6), torch.ones(6, dtype=torch.bool))})
    >>> batch = {"input_ids": torch.tensor([[0, 1, 2]]), "target_ids": torch.tensor([[0, 2, 1]])}
    >>> m.training_loss(batch).shape
    torch.Size([])
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.catalog import domain_of_items
from mmrec.models.base import LRSchedulerCallable, OptimizerCallable
from mmrec.models.registry import MODELS
from mmrec.models.sequential import SequentialRecommender
from mmrec.nn.item_encoder import Fusion, ItemEncoder
from mmrec.nn.sequence_encoder import CausalTransformer

Score = Literal["cosine", "dot"]
Centering = Literal["domain", "none"]

#: keys of the state dict that belong to one catalogue (not transferred)
CATALOG_SPECIFIC = ("item_ids.weight",)
#: constructor arguments saved with a pre-trained model (everything but the catalogue)
CONFIG_KEYS = (
    "dim",
    "num_layers",
    "num_heads",
    "dropout",
    "features",
    "fusion",
    "id_embedding",
    "in_domain_softmax",
    "score",
    "temperature",
    "center_features",
    "input_scale",
    "item_dropout",
    "lr",
    "weight_decay",
    "eval_ks",
    "predict_k",
)


#: what a pre-trained file without these keys was trained with (dot scores, raw features, unscaled inputs,
#: dropout inside the item projector): :meth:`TransferableRecommender.from_pretrained` fills them in
LEGACY_CONFIG: dict[str, Any] = {
    "score": "dot",
    "center_features": "none",
    "input_scale": 1.0,
    "item_dropout": None,
}


def center_by_domain(
    features: torch.Tensor, valid: torch.Tensor, ranges: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Subtract, inside each ``[lo, hi)`` row block, the mean of its valid rows; invalid rows stay zero.

    Args:
        features: ``(N+1, D)`` feature table (row 0 = padding).
        valid: ``(N+1,)`` bool, rows with a real vector.
        ranges: the domain blocks ``[(lo, hi), ...]`` (``1..N`` tiled).

    Returns:
        a new ``(N+1, D)`` table.

    Example:
        >>> f = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 2.0], [10.0, 0.0]])
        >>> center_by_domain(f, torch.tensor([False, True, True, True]), [(1, 3), (3, 4)])
        tensor([[ 0.,  0.],
                [-1.,  0.],
                [ 1.,  0.],
                [ 0.,  0.]])
    """
    out = features.clone()
    valid = valid.bool()
    for lo, hi in ranges:
        rows = valid[lo:hi]
        if bool(rows.any()):
            mean = features[lo:hi][rows].mean(0, keepdim=True)
            out[lo:hi] = (features[lo:hi] - mean) * rows.unsqueeze(-1).to(features.dtype)
    out[0] = 0
    return out


class ContentItemEncoder(ItemEncoder):
    """An :class:`~mmrec.nn.item_encoder.ItemEncoder` whose feature tables are centred per domain when
    attached (``center=True``) and whose output rows are L2-normalised (``normalize=True``).

    Both happen inside the module, so transfer strategies that wrap or cache the item encoder (side network,
    item-site adapters) see exactly what the pre-trained model saw.

    Args:
        domain_ranges: ``[(lo, hi), ...]`` item row blocks of the catalogue's domains.
        center: centre each feature table on each domain's mean (:func:`center_by_domain`).
        normalize: unit-norm output rows (row 0 stays zero).
        **kwargs: :class:`ItemEncoder` arguments.
    """

    def __init__(
        self, *, domain_ranges: Sequence[tuple[int, int]], center: bool, normalize: bool, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.domain_ranges = [(lo, hi) for lo, hi in domain_ranges]
        self.center = center
        self.normalize = normalize

    def attach_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attach ``name -> (features (N+1, D), valid (N+1,))``, centred per domain when ``center``."""
        if self.center:
            tables = {
                n: (center_by_domain(f.float(), v, self.domain_ranges), v) for n, (f, v) in tables.items()
            }
        super().attach_features(tables)

    def forward(self) -> torch.Tensor:
        """``(N+1, dim)`` item vectors; unit-norm rows when ``normalize`` (row 0 zero)."""
        items = super().forward()
        return F.normalize(items, dim=-1) if self.normalize else items


class ScaledCausalTransformer(CausalTransformer):
    """A :class:`~mmrec.nn.sequence_encoder.CausalTransformer` that multiplies its item inputs by
    ``input_scale`` before adding the position embeddings (as in SASRec's ``sqrt(d)`` scaling).

    Example:
        >>> enc = ScaledCausalTransformer(input_scale=4.0, dim=8, num_layers=1, num_heads=2, max_len=4)
        >>> enc(torch.randn(1, 3, 8), torch.tensor([[0, 1, 2]])).shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, *, input_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_scale = float(input_scale)

    def forward(
        self, item_embeddings: torch.Tensor, input_ids: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """As :meth:`CausalTransformer.forward`, on ``input_scale * item_embeddings``."""
        return super().forward(item_embeddings * self.input_scale, input_ids, last_only=last_only)


class DomainItemEmbedding(nn.Module):
    """Per-item ID embeddings added to content vectors, zero-initialised (so adding the table changes
    nothing until it trains); row 0 (padding) is always zero.

    Args:
        num_items: catalogue size N.
        dim: width.

    Example:
        >>> DomainItemEmbedding(3, 4)().abs().sum().item()
        0.0
    """

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_items + 1, dim))

    def reset_parameters(self) -> None:
        """Back to zeros (called by ``mmrec.adapters.reinitialize``)."""
        with torch.no_grad():
            self.weight.zero_()

    def forward(self) -> torch.Tensor:
        """``(N+1, dim)`` with row 0 zero."""
        return torch.cat([torch.zeros_like(self.weight[:1]), self.weight[1:]], dim=0)


@MODELS.register("sequential/transferable", tiny={"dim": 8, "num_layers": 1})
class TransferableRecommender(SequentialRecommender):
    """Content-based sequential recommender for cross-domain pre-training and transfer.

    Args:
        catalog: ``datamodule.catalog`` (``num_items``, ``num_users``, ``feature_dims``, optional
            ``domains``: ``[{"name", "offset", "num_items"}]`` contiguous blocks covering ``1..N``).
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout rate.
        features: feature stores to use (default: all of the catalogue's).
        fusion: combination of several features (``sum`` / ``concat`` / ``gated``).
        id_embedding: add per-domain item ID embeddings (zero-initialised, not transferred).
        in_domain_softmax: restrict the training softmax (and ranking) to the target's own domain when the
            catalogue has several domains; ``False`` = softmax over the whole union catalogue.
        score: ``"cosine"`` (L2-normalised queries and items, logits / ``temperature``) or ``"dot"``.
        temperature: softmax temperature of cosine scores.
        center_features: ``"domain"`` centres each domain's feature vectors on the domain mean (over the
            catalogue's valid items) when features are attached; ``"none"`` uses them as stored.
        input_scale: factor on the item vectors fed to the sequence encoder (``None`` = ``sqrt(dim)``).
        item_dropout: dropout inside the item projector (applies to the whole candidate table every step).
            ``None`` = ``dropout``.
        lr: learning rate of the default AdamW.
        weight_decay: weight decay of the default AdamW.
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
        optimizer, lr_scheduler: injected training callables (default ``AdamW(lr, weight_decay)``, constant rate);
            see :class:`~mmrec.models.base.RecommenderModule`.

    Shapes:
        ``item_vectors() -> (N+1, dim)``; ``query_vectors(batch) -> (B, dim)``; ``score_all -> (B, N+1)``.
    """

    item_domain: torch.Tensor  # buffer (register_buffer in __init__): (N+1,) domain index of each item

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
        features: list[str] | None = None,
        fusion: Fusion = "sum",
        id_embedding: bool = False,
        in_domain_softmax: bool = True,
        score: Score = "cosine",
        temperature: float = 0.07,
        center_features: Centering = "domain",
        input_scale: float | None = None,
        item_dropout: float | None = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if score not in ("cosine", "dot"):
            raise ValueError(f"score must be 'cosine' or 'dot', got {score!r}.")
        if center_features not in ("domain", "none"):
            raise ValueError(f"center_features must be 'domain' or 'none', got {center_features!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if catalog is not None and not catalog.get("feature_dims"):
            raise ValueError(
                "TransferableRecommender represents items by content only and needs feature stores: give the "
                "datamodule stores: {text: <store path>} (mmrec embed --config configs/embed/...)."
            )
        super().__init__(
            catalog=catalog,
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            features=features,
            fusion=fusion,
            use_id_embedding=False,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.save_hyperparameters()
        self.in_domain_softmax = in_domain_softmax
        self.domains = list(
            self.catalog.get("domains") or [{"name": "all", "offset": 0, "num_items": self.num_items}]
        )
        self.register_buffer("item_domain", domain_of_items(self.catalog), persistent=False)
        self.domain_ranges = [
            (int(d["offset"]) + 1, int(d["offset"]) + int(d["num_items"]) + 1) for d in self.domains
        ]
        self.item_ids = DomainItemEmbedding(self.num_items, dim) if id_embedding else None
        self.score = score
        self.temperature = float(temperature)
        # the same modules (names, parameters) as SequentialRecommender's, with the transfer behaviour inside
        available = dict(self.catalog.get("feature_dims") or {})
        self.items = ContentItemEncoder(
            domain_ranges=self.domain_ranges,
            center=center_features == "domain",
            normalize=score == "cosine",
            num_items=self.num_items,
            dim=dim,
            feature_dims={n: available[n] for n in self.feature_names},
            fusion=fusion,
            use_id_embedding=False,
            dropout=dropout if item_dropout is None else item_dropout,
        )
        self.encoder = ScaledCausalTransformer(
            input_scale=math.sqrt(dim) if input_scale is None else input_scale,
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            # unit-norm items times sqrt(dim) (the default input_scale) against N(0, 1) positions: both have
            # norm ~sqrt(dim), the balance this model was measured with
            position_std=1.0,
        )

    @property
    def multi_domain(self) -> bool:
        """Whether the catalogue has several domains and ranking / softmax stay inside one."""
        return self.in_domain_softmax and len(self.domains) > 1

    # ------------------------------------------------------------------ representations
    def item_vectors(self) -> torch.Tensor:
        """``(N+1, dim)``: content vectors (+ ID embeddings when enabled), unit-norm with cosine scores;
        row 0 is zero."""
        items = self.items()
        if self.item_ids is not None:
            items = items + self.item_ids()
        if self.score == "cosine":  # again: ID embeddings and item-side adapters act after the encoder's norm
            items = F.normalize(items, dim=-1)
        return items

    def sequence_hidden(
        self, input_ids: torch.Tensor, item_vecs: torch.Tensor | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """``(B, L, dim)`` hidden states (``(B, 1, dim)`` with ``last_only``); with cosine scores, unit-norm
        and divided by ``temperature`` (so ``hidden @ items.T`` are the logits); padded positions are zero."""
        hidden = super().sequence_hidden(input_ids, item_vecs, last_only=last_only)
        if self.score == "cosine":
            hidden = F.normalize(hidden, dim=-1) / self.temperature
        return hidden

    def _row_domains(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B,)`` domain of each row: ``batch["domain"]``, else the domain of the most recent item."""
        if "domain" in batch:
            return batch["domain"].to(self.item_domain.device)
        return self.item_domain[batch["input_ids"][:, -1]]

    def score_all(
        self, batch: Mapping[str, torch.Tensor], item_vecs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, N+1)`` scores; with several domains, other domains' items (and column 0) are ``-inf``."""
        scores = super().score_all(batch, item_vecs)
        if self.multi_domain:
            dom = self._row_domains(batch)
            other = (self.item_domain.unsqueeze(0) != dom.unsqueeze(1)) & (dom.unsqueeze(1) >= 0)
            scores = scores.masked_fill(other, float("-inf"))
        return scores

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy at every non-padded position, over the target's domain (in-domain softmax) or
        over the whole catalogue (one domain, or ``in_domain_softmax=False``)."""
        if not self.multi_domain:
            return super().training_loss(batch)
        items = self.item_vectors()
        hidden = self.sequence_hidden(batch["input_ids"], items)
        targets = batch["target_ids"]
        keep = targets > 0
        h, t = hidden[keep], targets[keep]  # (P, d), (P,)
        dom = self.item_domain[t]
        total = h.new_zeros(())
        for d in torch.unique(dom).tolist():
            rows = dom == d
            lo, hi = self.domain_ranges[d]
            logits = h[rows] @ items[lo:hi].T  # (P_d, N_d): the softmax never sees other domains
            total = total + F.cross_entropy(logits, t[rows] - lo, reduction="sum")
        return total / max(1, t.numel())

    # ------------------------------------------------------------------ transfer
    @classmethod
    def complete_config(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved config made complete for this class: files written before the transfer options existed
        (no ``score`` key) rebuild what was trained (:data:`LEGACY_CONFIG`)."""
        return saved if "score" in saved else {**LEGACY_CONFIG, **saved}

    def model_config(self) -> dict[str, Any]:
        """Constructor arguments other than the catalogue (what :meth:`from_pretrained` rebuilds from)."""
        hp = dict(self.hparams)
        return {k: (list(hp[k]) if isinstance(hp[k], tuple) else hp[k]) for k in CONFIG_KEYS if k in hp}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The transferable weights: everything but catalogue-specific tables (per-domain ID embeddings)."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k not in CATALOG_SPECIFIC}

    def load_backbone(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load pre-trained transferable weights (catalogue-specific tables keep their fresh values).

        Raises:
            ValueError: keys or shapes differ (different ``dim`` / ``num_layers`` / features).
        """
        own = {k: v for k, v in self.state_dict().items() if k not in CATALOG_SPECIFIC}
        given = {k: v for k, v in state.items() if k not in CATALOG_SPECIFIC}
        missing, unexpected = sorted(set(own) - set(given)), sorted(set(given) - set(own))
        shapes = [k for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape)]
        if missing or unexpected or shapes:
            raise ValueError(
                f"pre-trained weights do not fit this model (missing {missing[:4]}, unexpected {unexpected[:4]}, "
                f"shape mismatch {sorted(shapes)[:4]}): build it with the pre-trained model's config "
                "(TransferableRecommender.from_pretrained does)."
            )
        self.load_state_dict(given, strict=False)

    def save_pretrained(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``{"config", "state_dict", "extra"}`` (plain types and tensors: ``weights_only``-loadable).

        Args:
            path: file to write (parents created); written to a temporary name and renamed.
            extra: JSON-like metadata stored alongside (fingerprints, metrics).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "config": self.model_config(),
                "state_dict": self.backbone_state_dict(),
                "extra": dict(extra or {}),
            },
            tmp,
        )
        os.replace(tmp, path)
        return path

    @staticmethod
    def load_pretrained_file(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a file written by :meth:`save_pretrained` (``torch.load(weights_only=True)``)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no pre-trained model at {p}; pre-train with `mmrec bench crossdomain`.")
        blob = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or not {"config", "state_dict"} <= set(blob):
            raise ValueError(f"{p} is not a TransferableRecommender.save_pretrained file.")
        return blob

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any],
        catalog: Mapping[str, Any],
        **overrides: Any,
    ) -> TransferableRecommender:
        """A model for ``catalog`` (e.g. the target domain) with the pre-trained transferable weights.

        Args:
            source: a :meth:`save_pretrained` file, or its loaded ``{"config", "state_dict"}`` dict.
            catalog: the new catalogue (``datamodule.catalog``); its feature dims must match.
            **overrides: constructor arguments to change (``lr``, ``dropout``...; not the architecture).

        Returns:
            the model; attach the new catalogue's features with :meth:`attach_item_features`.
        """
        blob = cls.load_pretrained_file(source) if not isinstance(source, Mapping) else source
        config = {**cls.complete_config(dict(blob["config"])), **overrides}
        model = cls(catalog=dict(catalog), **config)
        model.load_backbone(blob["state_dict"])
        return model
