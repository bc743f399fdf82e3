"""Multimodal collaborative filtering over the frozen embedding stores: VBPR and FREEDOM.

Both are :class:`~mmrec.models.cf.PairwiseRecommender` models (BPR triples from the training
interactions, user vectors by ``batch["user"]``, inner-product scores that faiss can serve) whose items
also read frozen content features (``inputs["features"]``: store name -> ``(N+1, D)`` table + validity
mask; ``catalog["feature_dims"]`` sizes the layers). The tables are non-persistent buffers: checkpoints
hold only trained weights, the features are re-attached from the stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.models.base import LRSchedulerCallable, OptimizerCallable
from mmrec.models.cf import PairwiseRecommender, bpr_loss, l2_per_example
from mmrec.models.registry import MODELS
from mmrec.nn.graph import knn_graph, propagate, sym_norm_values
from mmrec.nn.interactions import InteractionTable


def choose_features(catalog: Mapping[str, Any], features: Sequence[str] | None, model: str) -> dict[str, int]:
    """The stores a model reads (default: all of the datamodule's, sorted) -> their widths."""
    available = dict(catalog.get("feature_dims") or {})
    chosen = sorted(available) if features is None else list(features)
    unknown = [f for f in chosen if f not in available]
    if not chosen or unknown:
        raise ValueError(
            f"{model} needs feature stores; asked for {chosen or 'none'}, the datamodule provides "
            f"{sorted(available) or 'none'}: set data.init_args.stores (name: store path, e.g. from "
            "`mmrec embed --config configs/embed/demo.yaml`) and model.init_args.features."
        )
    return {n: int(available[n]) for n in chosen}


def feature_table(
    tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]], names: Sequence[str], normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated ``(N+1, sum D)`` features of ``names`` (each L2-normalised when ``normalize``; invalid
    rows zero) and ``(N+1,)`` validity (valid in at least one store)."""
    parts, valid = [], None
    for name in names:
        feats, ok = tables[name]
        f = F.normalize(feats.float(), dim=-1) if normalize else feats.float()
        parts.append(f * ok.bool().unsqueeze(-1))
        valid = ok.bool() if valid is None else valid | ok.bool()
    assert valid is not None
    return torch.cat(parts, dim=-1), valid


@MODELS.register("multimodal/vbpr", tiny={"dim": 8, "visual_dim": 8})
class VBPR(PairwiseRecommender):
    """VBPR (He & McAuley 2016): ``score(u, i) = beta_i + <gamma_u, gamma_i> + <theta_u, E f_i> + <beta', f_i>``.

    ``f_i`` is the item's frozen content feature (the chosen stores, each L2-normalised, concatenated), ``E``
    a learned projection to ``visual_dim``. Items are ``[gamma_i, E f_i, beta_i, <beta', f_i>]`` and users
    ``[gamma_u, theta_u, 1, 1]``, so the score is one inner product. BPR loss; ``reg_weight`` is the L2
    penalty on the batch's ``gamma`` / ``theta`` / ``beta`` rows, ``content_reg`` the one on ``E`` and ``beta'``.

    Args:
        catalog: from the datamodule (``feature_dims``).
        dim: width of the ID factors ``gamma``.
        visual_dim: width of the content factors ``theta_u`` / ``E f_i``.
        features: stores to read (default: every store of the datamodule).
        normalize: L2-normalise each store's vectors before concatenation.
        use_bias: item bias ``beta_i`` and content bias ``<beta', f_i>``.
        content_reg: L2 on the whole projection ``E`` and ``beta'`` every step (VBPR's ``lambda_E``). Needed
            when the feature width exceeds the catalogue (the demo: 1,800 dims, 240 items), where ``E f_i``
            can memorise items like a second, unregularised ID embedding.
        samples_per_user, reg_weight, lr, weight_decay, eval_ks, predict_k, optimizer, lr_scheduler: see
            :class:`~mmrec.models.cf.PairwiseRecommender`.

    Example:
        >>> import scipy.sparse as sp
        >>> cat = {"num_items": 3, "num_users": 2, "feature_dims": {"image": 5}}
        >>> m = VBPR(catalog=cat, dim=4, visual_dim=2)
        >>> m.attach_data({"train_interactions": sp.csr_matrix([[0, 1, 1, 0], [0, 0, 0, 1]]),
        ...                "features": {"image": (torch.randn(4, 5), torch.ones(4, dtype=torch.bool))}})
        >>> m.item_vectors().shape, m.query_vectors({"user": torch.tensor([0])}).shape
        (torch.Size([4, 8]), torch.Size([1, 8]))
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 32,
        visual_dim: int = 32,
        features: list[str] | None = None,
        normalize: bool = True,
        use_bias: bool = True,
        content_reg: float = 0.1,
        samples_per_user: int | None = None,
        reg_weight: float = 1e-4,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(
            catalog=catalog,
            samples_per_user=samples_per_user,
            reg_weight=reg_weight,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        self.save_hyperparameters()
        dims = choose_features(self.catalog, features, "VBPR")
        self.feature_names = list(dims)
        self.normalize = normalize
        self.use_bias = use_bias
        if content_reg < 0:
            raise ValueError(f"content_reg must be >= 0, got {content_reg}.")
        self.content_reg = content_reg
        in_dim = sum(dims.values())
        self.user_id = nn.Embedding(self.num_users, dim)
        self.user_content = nn.Embedding(self.num_users, visual_dim)
        self.item_id = nn.Embedding(self.num_items + 1, dim, padding_idx=0)
        self.item_bias = nn.Embedding(self.num_items + 1, 1, padding_idx=0)
        self.projection = nn.Linear(in_dim, visual_dim, bias=False)
        self.content_bias = nn.Linear(in_dim, 1, bias=False)
        for emb in (self.user_id, self.user_content, self.item_id):
            nn.init.xavier_normal_(emb.weight)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)
        if not use_bias:
            self.item_bias.weight.requires_grad_(False)
            self.content_bias.weight.requires_grad_(False)
        self.content: torch.Tensor | None
        self.register_buffer("content", None, persistent=False)

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Training interactions and the frozen features of :attr:`feature_names`."""
        super().attach_data(inputs)
        if self.content is None:
            self.attach_item_features(inputs["features"])

    def attach_item_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attach ``name -> (features (N+1, D), valid (N+1,))`` tables."""
        content, _ = feature_table(tables, self.feature_names, self.normalize)
        if content.shape != (self.num_items + 1, self.projection.in_features):
            raise ValueError(
                f"features {self.feature_names} give a {tuple(content.shape)} table, expected "
                f"({self.num_items + 1}, {self.projection.in_features}); use the datamodule the model was built from."
            )
        self.content = content.to(self.device)

    def user_item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.content is None:
            raise RuntimeError("VBPR has no features: call model.attach_data(datamodule.model_inputs()).")
        ones = torch.ones(self.num_users, 2, device=self.user_id.weight.device)
        users = torch.cat([self.user_id.weight, self.user_content.weight, ones], dim=1)
        items = torch.cat(
            [
                self.item_id.weight,
                self.projection(self.content),
                self.item_bias.weight,
                self.content_bias(self.content),
            ],
            dim=1,
        )
        return users, items

    def pair_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u = torch.cat([self.user_id(users), self.user_content(users)], 1)
        cp, cn = self.content[pos], self.content[neg]  # type: ignore[index]
        p = torch.cat([self.item_id(pos), self.projection(cp)], 1)
        n = torch.cat([self.item_id(neg), self.projection(cn)], 1)
        diff = (u * (p - n)).sum(-1)
        if self.use_bias:
            diff = diff + (self.item_bias(pos) - self.item_bias(neg)).squeeze(-1)
            diff = diff + (self.content_bias(cp) - self.content_bias(cn)).squeeze(-1)
        loss = -F.logsigmoid(diff).mean()
        if self.reg_weight:
            rows = [self.user_id(users), self.user_content(users), self.item_id(pos), self.item_id(neg)]
            if self.use_bias:
                rows += [self.item_bias(pos), self.item_bias(neg)]
            loss = loss + self.reg_weight * l2_per_example(*rows)
        if self.content_reg:
            loss = (
                loss
                + self.content_reg
                * (self.projection.weight.pow(2).sum() + self.content_bias.weight.pow(2).sum())
                / 2
            )
        return loss


@MODELS.register("multimodal/freedom", tiny={"dim": 8, "knn_k": 3})
class FREEDOM(PairwiseRecommender):
    """FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph from the content features and a
    degree-pruned user-item graph, both propagating ID embeddings.

    - **Item-item graph, frozen**: for each store, every item's ``knn_k`` most cosine-similar items
      (itself included), weights ``1/sqrt(d_i d_j)``; the stores' graphs are summed with
      ``modality_weights`` and never updated. Item ID embeddings go through it ``num_mm_layers`` times:
      ``h = S^L e_item``.
    - **User-item graph, pruned**: at the start of every training epoch, ``(1 - edge_dropout)`` of the
      training edges are kept, drawn without replacement with probability ``∝ 1/sqrt(d_u d_i)`` (edges of
      high-degree nodes are pruned first), and the kept graph is re-normalised; LightGCN propagation
      (``num_ui_layers``, mean of layers) over it. Evaluation uses the full graph.
    - Final vectors: users ``u_g``, items ``i_g + h``. Loss: BPR + ``reg_weight`` x (for each store) BPR
      between the user vectors and the projected features of the positive / negative items.

    Differences from the reference code: any number of stores (the reference takes image + text with
    ``mm_image_weight``; here ``modality_weights``, default uniform), and the raw features stay frozen (the
    reference fine-tunes them inside its auxiliary loss only).

    Args:
        catalog: from the datamodule (``feature_dims``).
        dim: embedding width.
        features: stores to read (default: every store of the datamodule).
        modality_weights: store -> weight of its item-item graph (normalised to sum 1; default uniform).
        knn_k: neighbours per item in the item-item graphs.
        num_mm_layers: propagation steps over the item-item graph.
        num_ui_layers: LightGCN layers over the user-item graph.
        edge_dropout: share of user-item edges pruned each epoch (the paper: 0.8 or 0.9).
        samples_per_user, reg_weight, lr, weight_decay, eval_ks, predict_k, optimizer, lr_scheduler: see
            :class:`~mmrec.models.cf.PairwiseRecommender` (``reg_weight`` weighs the content BPR terms).

    Example:
        >>> import scipy.sparse as sp
        >>> cat = {"num_items": 3, "num_users": 2, "feature_dims": {"image": 5}}
        >>> m = FREEDOM(catalog=cat, dim=4, knn_k=2)
        >>> m.attach_data({"train_interactions": sp.csr_matrix([[0, 1, 1, 0], [0, 0, 1, 1]]),
        ...                "features": {"image": (torch.randn(4, 5), torch.ones(4, dtype=torch.bool))}})
        >>> [t.shape for t in m.user_item_vectors()]
        [torch.Size([2, 4]), torch.Size([4, 4])]
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        dim: int = 64,
        features: list[str] | None = None,
        modality_weights: dict[str, float] | None = None,
        knn_k: int = 10,
        num_mm_layers: int = 1,
        num_ui_layers: int = 2,
        edge_dropout: float = 0.8,
        samples_per_user: int | None = None,
        reg_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(
            catalog=catalog,
            samples_per_user=samples_per_user,
            reg_weight=reg_weight,
            lr=lr,
            weight_decay=weight_decay,
            eval_ks=eval_ks,
            predict_k=predict_k,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        if knn_k < 1 or num_mm_layers < 0 or num_ui_layers < 0 or not 0 <= edge_dropout < 1:
            raise ValueError(
                "need knn_k >= 1, num_mm_layers >= 0, num_ui_layers >= 0 and 0 <= edge_dropout < 1; got "
                f"knn_k={knn_k}, num_mm_layers={num_mm_layers}, num_ui_layers={num_ui_layers}, "
                f"edge_dropout={edge_dropout}."
            )
        self.save_hyperparameters()
        dims = choose_features(self.catalog, features, "FREEDOM")
        self.feature_names = list(dims)
        weights = {n: 1.0 for n in dims} if modality_weights is None else dict(modality_weights)
        if set(weights) != set(dims) or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(
                f"modality_weights must give a non-negative weight to each of {sorted(dims)}, got {weights}."
            )
        total = sum(weights.values())
        self.modality_weights = {n: weights[n] / total for n in dims}
        self.knn_k, self.num_mm_layers, self.num_ui_layers = knn_k, num_mm_layers, num_ui_layers
        self.edge_dropout = edge_dropout
        self.user_embedding = nn.Embedding(self.num_users, dim)
        self.item_embedding = nn.Embedding(self.num_items + 1, dim, padding_idx=0)
        nn.init.xavier_uniform_(self.user_embedding.weight)  # the reference code's initialisation
        nn.init.xavier_uniform_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.projections = nn.ModuleDict({n: nn.Linear(d, dim) for n, d in dims.items()})
        for name in ("item_graph", "full_graph", "pruned_graph", "edge_weights", "content"):
            self.register_buffer(name, None, persistent=False)
        self._slices = {}
        start = 0
        for name, d in dims.items():
            self._slices[name] = slice(start, start + d)
            start += d

    # ------------------------------------------------------------------ graphs
    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Training interactions (user-item graph) and the frozen features (item-item graph)."""
        super().attach_data(inputs)
        if self.item_graph is None:
            self.attach_item_features(inputs["features"])

    def attach_item_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Build the frozen item-item graph from ``name -> (features (N+1, D), valid (N+1,))`` tables."""
        graph = None
        content = []
        for name in self.feature_names:
            feats, valid = tables[name]
            if feats.shape[0] != self.num_items + 1:
                raise ValueError(
                    f"feature {name!r} has {feats.shape[0]} rows, expected {self.num_items + 1}."
                )
            g = knn_graph(feats, valid, self.knn_k) * self.modality_weights[name]
            graph = g if graph is None else graph + g
            content.append(feats.float() * valid.bool().unsqueeze(-1))
        assert graph is not None
        self.item_graph = graph.coalesce().to(self.device)
        self.content = torch.cat(content, dim=1).to(self.device)

    def on_interactions_attached(self, table: InteractionTable) -> None:
        self.edge_weights = sym_norm_values(table.rows, table.indices, self.num_users, self.num_items + 1)
        self.full_graph = self._graph(table.rows, table.indices)

    def _graph(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = self.num_users + self.num_items + 1
        values = sym_norm_values(users, items, self.num_users, self.num_items + 1)
        idx = torch.cat(
            [torch.stack([users, items + self.num_users]), torch.stack([items + self.num_users, users])], 1
        )
        return torch.sparse_coo_tensor(
            idx, torch.cat([values, values]), (n, n), check_invariants=False
        ).coalesce()

    def prune_edges(self) -> None:
        """Draw this epoch's degree-pruned user-item graph (called at the start of every training epoch)."""
        table = self._require_interactions()
        if self.edge_dropout <= 0:
            self.pruned_graph = self.full_graph
            return
        keep = max(1, int(table.nnz * (1.0 - self.edge_dropout)))
        idx = torch.multinomial(self.edge_weights, keep, replacement=False)
        self.pruned_graph = self._graph(table.rows[idx], table.indices[idx])

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.prune_edges()

    # ------------------------------------------------------------------ vectors
    def _propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item_embedding.weight
        for _ in range(self.num_mm_layers):
            h = torch.sparse.mm(self.item_graph, h)
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        out = propagate(graph, ego, self.num_ui_layers)
        return out[: self.num_users], out[self.num_users :] + h

    def user_item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors over the full user-item graph (evaluation and serving)."""
        if self.full_graph is None or self.item_graph is None:
            raise RuntimeError("FREEDOM has no graphs: call model.attach_data(datamodule.model_inputs()).")
        return self._propagate(self.full_graph)

    def pair_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if self.pruned_graph is None:
            self.prune_edges()
        user_tab, item_tab = self._propagate(self.pruned_graph)
        u = user_tab[users]
        loss = bpr_loss(u, item_tab[pos], item_tab[neg])
        if self.reg_weight:
            for name, proj in self.projections.items():
                feats = self.content[:, self._slices[name]]
                loss = loss + self.reg_weight * bpr_loss(u, proj(feats[pos]), proj(feats[neg]))
        return loss
