"""Neighbourhood baselines without trainable parameters: item-kNN, sequential item-kNN and content-kNN.

All three score a user by summing item-item similarities over the items of the user's history; they differ
in where the similarity comes from and which history items count:

- ``knn/item`` (:class:`ItemKNN`): cosine between the items' columns of the training user x item matrix
  (Sarwar et al. 2001; Deshpande & Karypis 2004), each item keeping its ``k`` nearest neighbours; the
  profile is every item the user has seen.
- ``knn/sequential`` (:class:`SequentialItemKNN`): the same kind of similarity, counted either over whole
  histories or over nearby positions of the training sequences (sequential rules, Ludewig & Jannach
  2018), scored from the LAST ``last`` items of the history with weights ``decay ** age`` (as
  session-kNN baselines do).
- ``knn/content`` (:class:`ContentKNN`): cosine between frozen item features (an embedding store), the bar
  any content-based model must clear.

They go through ``mmrec fit`` like every model. Training has nothing to learn: the similarity is built in
:meth:`attach_data` (``RecommenderModule.setup``), :meth:`ParameterFreeRecommender.configure_optimizers`
returns ``None`` and the training step is a no-op, so one epoch (``trainer.max_epochs: 1``) runs the
validation (and ``test_after_fit`` the test) with the usual evaluator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mmrec.models.base import RecommenderModule
from mmrec.models.registry import MODELS
from mmrec.nn.interactions import InteractionTable, binary_csr

Cooccurrence = Literal["user", "window"]
Neighbourhood = Literal["history", "candidate"]


class ParameterFreeRecommender(RecommenderModule):
    """A recommender with nothing to train: ``mmrec fit`` runs one pass, validates (and tests) it.

    Everything it knows is computed from the training split in :meth:`attach_data`; the no-training path
    itself (no optimiser, no loss, stop after the first validation) is :class:`RecommenderModule`'s
    ``requires_training = False``.
    """

    requires_training: ClassVar[bool] = False

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError(f"{type(self).__name__} has no trainable parameters and no training loss.")


def topk_rows(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of every row of ``sim`` (ties broken by column index).

    Example:
        >>> topk_rows(sp.csr_matrix([[0.0, 3.0, 1.0, 2.0]]), 2).toarray().tolist()
        [[0.0, 3.0, 0.0, 2.0]]
    """
    sim = sim.tocsr()
    sim.eliminate_zeros()
    sim.sort_indices()
    keep = np.zeros(sim.nnz, dtype=bool)
    for r in range(sim.shape[0]):
        lo, hi = sim.indptr[r], sim.indptr[r + 1]
        if hi - lo <= k:
            keep[lo:hi] = True
            continue
        order = np.lexsort((sim.indices[lo:hi], -sim.data[lo:hi]))[:k]
        keep[lo + order] = True
    rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
    return sp.csr_matrix((sim.data[keep], (rows[keep], sim.indices[keep])), shape=sim.shape)


def cosine_neighbours(
    cooc: sp.spmatrix, counts: np.ndarray, k: int, shrink: float = 0.0, keep: Neighbourhood = "history"
) -> sp.csr_matrix:
    """Item-item cosine ``c_ij / (sqrt(n_i n_j) + shrink)``, diagonal removed, top-``k`` kept per item.

    Args:
        cooc: ``(N+1, N+1)`` co-occurrence counts (row = the history item, column = the candidate).
        counts: ``(N+1,)`` item counts ``n_i`` (the diagonal of ``X^T X`` for user co-occurrence).
        k: neighbours kept per item.
        shrink: added to the denominator; damps similarities supported by few users.
        keep: ``"history"``: each history item (row) keeps its ``k`` most similar candidates;
            ``"candidate"``: each candidate (column) keeps its ``k`` most similar history items
            (Sarwar et al.'s neighbourhood of the predicted item, as RecBole's ItemKNN).

    Returns:
        ``(N+1, N+1)`` CSR similarity.
    """
    c = sp.coo_matrix(cooc)
    off = c.row != c.col
    row, col, data = c.row[off], c.col[off], c.data[off].astype(np.float64)
    norm = np.sqrt(counts[row].astype(np.float64) * counts[col]) + shrink
    vals = np.divide(data, norm, out=np.zeros_like(data), where=norm > 0)
    sim = sp.csr_matrix((vals.astype(np.float32), (row, col)), shape=c.shape)
    if keep == "candidate":
        return topk_rows(sim.T.tocsr(), k).T.tocsr()
    return topk_rows(sim, k)


def window_cooccurrence(
    sequences: Sequence[Sequence[int]], num_items: int, window: int, directed: bool
) -> sp.csr_matrix:
    """Counts of item pairs at most ``window`` positions apart in the training sequences, weighted ``1/gap``.

    ``directed``: only ``(earlier, later)`` pairs (what follows an item); otherwise both orders.

    Example:
        >>> window_cooccurrence([[1, 2, 3]], 3, window=2, directed=True).toarray()[1].tolist()
        [0.0, 0.0, 1.0, 0.5]
    """
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for gap in range(1, window + 1):
        for seq in sequences:
            s = np.asarray(seq, dtype=np.int64)
            if len(s) <= gap:
                continue
            rows.append(s[:-gap])
            cols.append(s[gap:])
            vals.append(np.full(len(s) - gap, 1.0 / gap, dtype=np.float32))
    if not rows:
        return sp.csr_matrix((num_items + 1, num_items + 1), dtype=np.float32)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    m = sp.csr_matrix((v, (r, c)), shape=(num_items + 1, num_items + 1))
    return m if directed else (m + m.T).tocsr()


def sparse_tensor(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced float32 torch COO tensor."""
    c = sp.coo_matrix(matrix)
    idx = torch.from_numpy(np.vstack([c.row, c.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(c.data.astype(np.float32)), c.shape, check_invariants=False
    ).coalesce()


class SimilarityKNN(ParameterFreeRecommender):
    """Scores ``profile (B, N+1) @ S (N+1, N+1)`` with a sparse item-item similarity ``S``.

    ``S`` is kept transposed (``S^T``, a non-persistent buffer rebuilt by :meth:`attach_data`): row ``j``
    of ``S^T`` is item ``j``'s vector, so the model is also an item / query tower (``item_vectors`` is the
    dense ``S^T``, ``O(N^2)`` memory, for serving; evaluation stays sparse).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.similarity_t: torch.Tensor | None
        self.register_buffer("similarity_t", None, persistent=False)

    def build_similarity(self, inputs: Mapping[str, Any]) -> sp.csr_matrix:
        """``(N+1, N+1)`` similarity, row = history item, column = candidate."""
        raise NotImplementedError

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Build the similarity from the training data (once per model; rebuilt when loaded elsewhere)."""
        if self.similarity_t is not None:
            return
        sim = self.build_similarity(inputs)
        n = self.num_items + 1
        if sim.shape != (n, n):
            raise ValueError(
                f"similarity has shape {sim.shape}, expected ({n}, {n}); is this the right dataset?"
            )
        self.similarity_t = sparse_tensor(sim.T).to(self.device)

    def _require_similarity(self) -> torch.Tensor:
        if self.similarity_t is None:
            raise RuntimeError(
                f"{type(self).__name__} has no similarity yet: call model.attach_data(datamodule.model_inputs()) "
                "(the Trainer does it in setup)."
            )
        return self.similarity_t

    def item_vectors(self) -> torch.Tensor:
        """Dense ``(N+1, N+1)`` ``S^T`` (row ``j``: every item's similarity to ``j``)."""
        return self._require_similarity().to_dense()

    def _eval_items(self) -> torch.Tensor:
        return self._require_similarity()

    def score_all(
        self, batch: Mapping[str, torch.Tensor], item_vecs: torch.Tensor | None = None
    ) -> torch.Tensor:
        items = item_vecs if item_vecs is not None else self._require_similarity()
        query = self.query_vectors(batch)
        scores = torch.sparse.mm(items, query.T).T if items.is_sparse else query @ items.T
        scores = scores.contiguous()
        scores[:, 0] = float("-inf")
        return scores


@MODELS.register("knn/item", tiny={"k": 5})
class ItemKNN(SimilarityKNN):
    """Item-based kNN over the training user x item matrix.

    ``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)`` (cosine of binary item columns), each
    candidate ``j`` keeping its ``k`` most similar items (``keep: candidate``, as RecBole; ``keep: history``:
    each history item keeps its ``k`` neighbours); ``score(u, j) = sum_{i in H_u} sim(i, j)`` with ``H_u`` the
    user's training items plus the items of ``input_ids`` (so the test ranking also uses the validation
    item, as sequential models do). Users unknown to the training data (``user = -1``) are scored from
    ``input_ids`` alone.

    Args:
        catalog: from the datamodule.
        k: neighbours kept per item.
        shrink: similarity shrinkage (``0`` = plain cosine).
        keep: whose ``k`` neighbours are kept, ``candidate`` or ``history`` (see above).
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.

    Example:
        >>> import scipy.sparse as sp
        >>> m = ItemKNN(catalog={"num_items": 3, "num_users": 2}, k=2, keep="history")
        >>> m.attach_data({"train_interactions": sp.csr_matrix([[0, 1, 1, 0], [0, 1, 1, 1]])})
        >>> m.score_all({"user": torch.tensor([-1]), "input_ids": torch.tensor([[1]])})[0, 1:].tolist()
        [0.0, 1.0, 0.7071067690849304]
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        k: int = 100,
        shrink: float = 0.0,
        keep: Neighbourhood = "candidate",
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
    ) -> None:
        super().__init__(catalog=catalog, eval_ks=eval_ks, predict_k=predict_k)
        if k < 1 or shrink < 0:
            raise ValueError(f"k must be >= 1 and shrink >= 0, got k={k}, shrink={shrink}.")
        if keep not in ("history", "candidate"):
            raise ValueError(f"keep must be 'history' or 'candidate', got {keep!r}.")
        self.save_hyperparameters()
        self.k = k
        self.shrink = shrink
        self.keep = keep
        self.interactions: InteractionTable | None = None

    def build_similarity(self, inputs: Mapping[str, Any]) -> sp.csr_matrix:
        matrix = inputs["train_interactions"]
        self.interactions = InteractionTable(matrix).to(self.device)
        x = binary_csr(matrix)
        counts = np.asarray(x.sum(axis=0)).ravel()
        return cosine_neighbours(x.T @ x, counts, self.k, self.shrink, self.keep)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, N+1)`` binary profiles: training items of ``batch["user"]`` ∪ items of ``input_ids``."""
        ids = batch["input_ids"]
        users = batch.get("user")
        if self.interactions is not None and users is not None:
            profile = self.interactions.dense_rows(users.to(ids.device))
        else:
            profile = torch.zeros(ids.shape[0], self.num_items + 1, device=ids.device)
        profile.scatter_(1, ids, 1.0)
        profile[:, 0] = 0.0
        return profile


@MODELS.register("knn/sequential", tiny={"k": 5, "last": 3})
class SequentialItemKNN(SimilarityKNN):
    """Sequential item-kNN: the similarity rows of the last ``last`` history items, recency-weighted.

    ``score(u, j) = sum_{t=0}^{last-1} decay^t * sim(h_{-1-t}, j)`` where ``h_{-1}`` is the most recent item
    of ``input_ids``. The similarity is the cosine-normalised co-occurrence (``c_ij / (sqrt(n_i n_j) +
    shrink)``, top-``k`` per item) counted

    - ``cooccurrence: user``: over whole training histories (as :class:`ItemKNN`), or
    - ``cooccurrence: window``: over pairs at most ``window`` positions apart in the training sequences,
      weighted ``1/gap``; ``directed: true`` counts only what comes after an item (sequential rules).

    Args:
        catalog: from the datamodule.
        k: neighbours kept per item.
        shrink: similarity shrinkage.
        last: how many of the most recent items score.
        decay: weight ratio between consecutive history positions (``1`` = unweighted).
        cooccurrence: ``user`` or ``window``.
        window: largest gap counted (``cooccurrence: window``).
        directed: count only ``(earlier, later)`` pairs (``cooccurrence: window``).
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.

    Example:
        >>> m = SequentialItemKNN(catalog={"num_items": 3, "num_users": 1}, window=1)
        >>> m.attach_data({"train_sequences": [[1, 2, 3, 1, 2]]})
        >>> m.score_all({"input_ids": torch.tensor([[0, 1]])})[0, 1:].argmax().item() + 1
        2
    """

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        k: int = 100,
        shrink: float = 0.0,
        last: int = 5,
        decay: float = 0.5,
        cooccurrence: Cooccurrence = "window",
        window: int = 3,
        directed: bool = True,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
    ) -> None:
        super().__init__(catalog=catalog, eval_ks=eval_ks, predict_k=predict_k)
        if k < 1 or shrink < 0 or last < 1 or window < 1 or not 0 < decay <= 1:
            raise ValueError(
                f"need k >= 1, shrink >= 0, last >= 1, window >= 1 and 0 < decay <= 1; got k={k}, "
                f"shrink={shrink}, last={last}, window={window}, decay={decay}."
            )
        if cooccurrence not in ("user", "window"):
            raise ValueError(f"cooccurrence must be 'user' or 'window', got {cooccurrence!r}.")
        self.save_hyperparameters()
        self.k, self.shrink, self.last, self.decay = k, shrink, last, decay
        self.cooccurrence, self.window, self.directed = cooccurrence, window, directed

    def build_similarity(self, inputs: Mapping[str, Any]) -> sp.csr_matrix:
        n = self.num_items
        if self.cooccurrence == "user":
            x = binary_csr(inputs["train_interactions"])
            return cosine_neighbours(x.T @ x, np.asarray(x.sum(axis=0)).ravel(), self.k, self.shrink)
        seqs = inputs["train_sequences"]
        counts = np.bincount(np.fromiter((i for s in seqs for i in s), dtype=np.int64), minlength=n + 1)
        cooc = window_cooccurrence(seqs, n, self.window, self.directed)
        return cosine_neighbours(cooc, counts[: n + 1], self.k, self.shrink)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, N+1)`` recency-weighted profiles of the last ``last`` items of ``input_ids``."""
        ids = batch["input_ids"][:, -self.last :]
        age = torch.arange(ids.shape[1] - 1, -1, -1, device=ids.device, dtype=torch.float32)
        weights = (self.decay**age).expand(ids.shape[0], -1) * (ids > 0)
        profile = torch.zeros(ids.shape[0], self.num_items + 1, device=ids.device)
        profile.scatter_add_(1, ids, weights)
        profile[:, 0] = 0.0
        return profile


@MODELS.register("knn/content", tiny={})
class ContentKNN(ParameterFreeRecommender):
    """Content kNN: ``score(u, j) = cos(h_u, f_j)`` with ``f_j`` the L2-normalised frozen feature of item ``j``
    and ``h_u`` the sum of the normalised features of the history (the last ``max_len`` items the models
    see; ``history="last"``: the most recent item only).

    No parameter, no training, no interaction data beyond the user's own history: the bar any content-based
    model has to clear (a model that reads the same features and ranks below it has learned nothing from
    them). Items without a valid vector score 0.

    Args:
        catalog: from the datamodule (``feature_dims`` names the stores).
        history: ``"all"`` (sum over the history) or ``"last"``.
        feature: which store to use (default: the first name in sorted order).
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.

    Example:
        >>> f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn = ContentKNN(catalog={"num_items": 3, "num_users": 1, "feature_dims": {"text": 2}})
        >>> knn.attach_item_features({"text": (f, torch.tensor([False, True, True, True]))})
        >>> knn.score_all({"input_ids": torch.tensor([[0, 1]])})[0, 1:].argmax().item() + 1
        1
    """

    HISTORY = ("all", "last")

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        history: Literal["all", "last"] = "all",
        feature: str | None = None,
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
    ) -> None:
        super().__init__(catalog=catalog, eval_ks=eval_ks, predict_k=predict_k)
        if history not in self.HISTORY:
            raise ValueError(f"history must be one of {self.HISTORY}, got {history!r}.")
        available = sorted(self.catalog.get("feature_dims") or {})
        if not available:
            raise ValueError(
                "ContentKNN needs a feature store: set data.init_args.stores (name: store path) "
                "(e.g. from `mmrec embed --config configs/embed/demo.yaml`)."
            )
        name = feature if feature is not None else available[0]
        if name not in available:
            raise ValueError(f"feature {name!r} is not among the datamodule's stores {available}.")
        self.save_hyperparameters()
        self.history = history
        self.feature = name
        self.features: torch.Tensor | None
        self.register_buffer("features", None, persistent=False)

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Attach the frozen table of :attr:`feature` from ``inputs["features"]``."""
        if self.features is None:
            self.attach_item_features(inputs["features"])

    def attach_item_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attach ``name -> (features (N+1, D), valid (N+1,))`` tables (only :attr:`feature` is used)."""
        if self.feature not in tables:
            raise KeyError(f"feature {self.feature!r} not among the catalogue's tables {sorted(tables)}.")
        feats, valid = tables[self.feature]
        if feats.shape[0] != self.num_items + 1:
            raise ValueError(f"feature table has {feats.shape[0]} rows, expected {self.num_items + 1} (N+1).")
        normed = F.normalize(feats.float(), dim=-1) * valid.bool().unsqueeze(-1)
        self.features = normed.to(self.device)

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, D)`` unit-norm item features (zero rows for padding / invalid items)."""
        if self.features is None:
            raise RuntimeError(
                "ContentKNN has no features yet: call model.attach_data(datamodule.model_inputs()) "
                "(the Trainer does it in setup)."
            )
        return self.features

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, D)`` normalised sum (or last) of the history's features."""
        items = (
            self._cached_items
            if (self._cached_items is not None and not self.training)
            else self.item_vectors()
        )
        ids = batch["input_ids"]
        query = items[ids[:, -1]] if self.history == "last" else items[ids].sum(1)
        return F.normalize(query, dim=-1)
