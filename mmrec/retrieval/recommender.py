"""Serve top-K recommendations from a trained checkpoint, with or without a faiss index.

:meth:`Recommender.from_checkpoint` rebuilds what training used, from the checkpoint alone: the
datamodule (from ``datamodule_hyper_parameters``, which LightningCLI records with its ``_class_path``),
the model (``load_from_checkpoint(..., weights_only=True)``) and its frozen item features (attached from
the datamodule's embedding stores, since checkpoints hold trained weights only). Then:

- :meth:`Recommender.item_vectors` -> ``(N, d)`` item table (no padding row; row ``r`` is
  ``item_ids[r]``), the same vectors the model scores with;
- :meth:`Recommender.recommend_user` for a known user (their whole history is the query and is masked),
  :meth:`Recommender.recommend_history` for a new user given as item ids,
  :meth:`Recommender.recommend_many` for batches.

Scores are ``query @ item`` inner products, as in training and evaluation. Without an index they are
computed exactly with torch (chunked over the catalogue); with an index (``index_dir``) faiss serves them
(exact scores after re-ranking, see :mod:`mmrec.retrieval.index`). An index is only accepted when its
manifest says it was built from this checkpoint (same sha256) or from the same model weights and
features (same model fingerprint) with the same dimension and items.

Errors (:mod:`mmrec.retrieval.errors`), checkpoint reading (:mod:`mmrec.retrieval.checkpoint`), the exact
torch top-k (:mod:`mmrec.retrieval.exact_topk`) and the index-fits-model check
(:mod:`mmrec.retrieval.provenance`) live in modules of their own; their public names are re-exported here.

Example:
    >>> rec = Recommender.from_checkpoint("runs/demo/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> rec.recommend_user("u001", k=3)  # doctest: +SKIP
    [('i042', 7.31), ('i017', 6.88), ('i003', 6.52)]
    >>> rec.recommend_history(["i001", "i002"], k=2)  # doctest: +SKIP
    [('i003', 8.1), ('i004', 7.9)]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, LightningModule

from mmrec.protocols import CatalogSource, DataConsumer, ModelInputSource, QueryBatchSource
from mmrec.retrieval.checkpoint import (
    TRUSTED_PREFIXES,
    describe_source,
    load_checkpoint_meta,
    model_fingerprint,
    resolve_class,
)
from mmrec.retrieval.errors import (
    EmptyHistoryError,
    IndexMismatchError,
    NotServableError,
    RecommenderError,
    UnknownItemsError,
    UnknownUserError,
    not_servable,
    servability_problem,
    suggest,
)
from mmrec.retrieval.exact_topk import exact_topk
from mmrec.retrieval.index import ItemIndex, ItemIndexError, set_threads
from mmrec.retrieval.provenance import check_index_source, feature_fingerprints
from mmrec.store import file_sha256

# errors, checkpoint reading and provenance live in their own modules; their names stay importable from here
__all__ = [
    "TRUSTED_PREFIXES",
    "EmptyHistoryError",
    "IndexMismatchError",
    "NotServableError",
    "Recommendation",
    "Recommender",
    "RecommenderError",
    "UnknownItemsError",
    "UnknownUserError",
    "describe_source",
    "load_checkpoint_meta",
    "model_fingerprint",
    "resolve_class",
    "servability_problem",
    "suggest",
]

log = logging.getLogger(__name__)

Recommendation = list[tuple[str, float]]


class Recommender:
    """Top-K recommendations from a trained mmrec model (build it with :meth:`from_checkpoint`).

    Args:
        model: a :class:`~mmrec.models.base.RecommenderModule` with its item features attached.
        datamodule: the datamodule it was trained with, set up (gives ``item_ids``, ``user_ids``,
            ``sequences`` and ``max_len``).
        index: an :class:`~mmrec.retrieval.index.ItemIndex` to serve from (checked against ``source``), or
            None for exact torch scoring.
        device: where the model runs.
        source: the checkpoint description (``path``, ``sha256``, ``model_class``, ``model_fingerprint``...)
            recorded in index manifests; computed lazily by :meth:`from_checkpoint`.
    """

    def __init__(
        self,
        model: Any,
        datamodule: Any,
        *,
        index: ItemIndex | None = None,
        device: str | torch.device = "cpu",
        source: Mapping[str, Any] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._checkpoint_path = (
            Path(checkpoint_path).expanduser().resolve() if checkpoint_path is not None else None
        )
        problem = servability_problem(model, datamodule)
        if problem is not None:
            raise not_servable(problem, self._checkpoint_path)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.datamodule = datamodule
        if getattr(datamodule, "splits", None) is None and hasattr(datamodule, "setup"):
            datamodule.setup("predict")
        missing = [a for a in ("item_ids", "user_ids", "sequences") if not hasattr(datamodule, a)]
        if missing:
            raise RecommenderError(
                f"{type(datamodule).__name__} lacks {missing}: the recommender needs the datamodule's item ids, "
                "user ids and per-user item sequences (as SequentialDataModule provides)."
            )
        self.item_ids: list[str] = list(datamodule.item_ids)
        self.user_ids: list[str] = list(datamodule.user_ids)
        self.max_len = int(getattr(datamodule, "max_len", 50))
        self._item_index = {iid: i + 1 for i, iid in enumerate(self.item_ids)}
        self._user_index = {uid: u for u, uid in enumerate(self.user_ids)}
        self._given_source = dict(source) if source is not None else None
        self._sorted_cache: dict[str, list[str]] = {}
        with torch.inference_mode():
            try:
                self._items = self.model.item_vectors().detach().float()  # (N+1, d), row 0 = padding
            except NotImplementedError:
                raise not_servable(
                    f"the model ({type(model).__name__}) does not implement `item_vectors()`",
                    self._checkpoint_path,
                ) from None
        if self._items.shape[0] != len(self.item_ids) + 1:
            raise RecommenderError(
                f"the model has {self._items.shape[0] - 1} items but the datamodule {len(self.item_ids)}; "
                "the checkpoint and dataset do not match."
            )
        # query_vectors of sequential models reuse the cached table instead of recomputing it per batch
        self.model._cached_items = self._items
        self.index: ItemIndex | None = None
        if index is not None:
            self.attach_index(index)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | os.PathLike[str],
        *,
        index_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        data_overrides: Mapping[str, Any] | None = None,
        index_params: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> Recommender:
        """Rebuild datamodule + model from a checkpoint written by ``mmrec fit``.

        Args:
            ckpt_path: the ``.ckpt`` file.
            index_dir: a folder written by ``mmrec index --ckpt`` for this checkpoint (None = exact torch).
            device: ``cpu`` / ``cuda`` for the model.
            data_overrides: datamodule init arguments to replace, e.g. ``{"dataset": "/new/place/demo"}``
                when the dataset moved since training.
            index_params: search parameters for the index (``nprobe``, ``ef_search``, ``rerank_factor``).
            threads: faiss CPU threads.

        Raises:
            RecommenderError: unreadable checkpoint, missing dataset, dataset changed since training,
                index built for another model (:class:`IndexMismatchError`).
        """
        path = Path(ckpt_path).expanduser().resolve()
        ckpt = load_checkpoint_meta(path)
        hp = dict(ckpt["hyper_parameters"])
        dhp = dict(ckpt["datamodule_hyper_parameters"])
        model_cls = resolve_class(hp["_class_path"], LightningModule)
        dm_cls = resolve_class(dhp["_class_path"], LightningDataModule)
        dm_args = {k: v for k, v in dhp.items() if not k.startswith("_")}
        dm_args.update(dict(data_overrides or {}))
        try:
            dm = dm_cls(**dm_args)
            dm.setup("predict")
        except (OSError, ValueError) as e:
            raise RecommenderError(
                f"cannot rebuild the datamodule of {path.name} ({dhp['_class_path']}, dataset "
                f"{dm_args.get('dataset')!r}): {e}\nIf the data moved since training, pass "
                "data_overrides={'dataset': NEW_PATH} (CLI: --dataset NEW_PATH); relative paths are resolved "
                "against the current directory."
            ) from e
        trained = dict(hp.get("catalog") or {})
        now = dict(cast(CatalogSource, dm).catalog)  # every mmrec datamodule has one
        for key in ("num_items", "fingerprint", "feature_dims"):
            if key in trained and trained[key] != now.get(key):
                raise RecommenderError(
                    f"{path.name} was trained on dataset {trained.get('dataset')!r} with {key}={trained[key]!r}, but "
                    f"{dm_args.get('dataset')!r} now gives {now.get(key)!r}: the data changed since training. "
                    "Point --dataset / data_overrides to the data the model was trained on, or retrain."
                )
        model = model_cls.load_from_checkpoint(path, map_location=torch.device(device), weights_only=True)
        if isinstance(model, DataConsumer) and isinstance(dm, ModelInputSource):
            model.attach_data(dm.model_inputs())  # frozen features etc. are not in checkpoints
        del ckpt
        index = None
        if index_dir is not None:
            set_threads(threads)
            try:
                index = ItemIndex.load(index_dir, params=index_params, threads=threads)
            except ItemIndexError as e:
                raise RecommenderError(str(e)) from e
        return cls(model, dm, index=index, device=device, checkpoint_path=path)

    # ----------------------------------------------------------------- provenance
    @cached_property
    def source(self) -> dict[str, Any]:
        """What an index manifest records about this model (``type: checkpoint``): path, sha256, model class,
        model fingerprint, catalogue fingerprint, dimension, number of items, feature store fingerprints."""
        if self._given_source is not None:
            return dict(self._given_source)
        features = feature_fingerprints(
            getattr(self.datamodule, "feature_paths", None) or {},
            getattr(self.model, "feature_names", None) or [],
        )
        catalog = dict(getattr(self.model, "catalog", {}) or {})
        class_path = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
        return {
            "type": "checkpoint",
            "path": str(self._checkpoint_path) if self._checkpoint_path else None,
            "sha256": file_sha256(self._checkpoint_path) if self._checkpoint_path else None,
            "model_class": class_path,
            "model_fingerprint": model_fingerprint(
                class_path,
                self.model.state_dict(),
                catalog_fingerprint=str(catalog.get("fingerprint", "")),
                feature_fingerprints=features,
            ),
            "catalog_fingerprint": str(catalog.get("fingerprint", "")),
            "dataset": catalog.get("dataset"),
            "num_items": len(self.item_ids),
            "dim": self.dim,
            "features": features,
        }

    def attach_index(self, index: ItemIndex) -> None:
        """Serve from ``index`` after checking that it was built from this model.

        Raises:
            IndexMismatchError: built from another checkpoint / model, a store, another dimension, other items,
                or with the cosine metric (models score by inner product).
        """
        check_index_source(index, self.source, self.dim, self.item_ids)
        self.index = index

    # ----------------------------------------------------------------- vectors
    @property
    def dim(self) -> int:
        return int(self._items.shape[1])

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def item_vectors(self) -> torch.Tensor:
        """``(N, d)`` float32 item table on CPU, row ``r`` = ``item_ids[r]`` (the padding row removed).

        Example:
            >>> table = rec.item_vectors().numpy()  # doctest: +SKIP
            >>> faiss_index = faiss.IndexFlatIP(table.shape[1]); faiss_index.add(table)  # doctest: +SKIP
        """
        return self._items[1:].to("cpu")

    def user_history(self, user_id: str) -> list[str]:
        """The item ids of a known user's history, oldest first."""
        return [self.item_ids[i - 1] for i in self._history_of(user_id)]

    def _sorted_ids(self, what: str) -> list[str] | None:
        """Sorted user / item ids for suggestions in large catalogues (built once, on the first error)."""
        ids = self.user_ids if what == "user" else self.item_ids
        if len(ids) <= 5000:
            return None
        if what not in self._sorted_cache:
            self._sorted_cache[what] = sorted(ids)
        return self._sorted_cache[what]

    def _history_of(self, user_id: str) -> list[int]:
        u = self._user_index.get(str(user_id))
        if u is None:
            raise UnknownUserError(
                str(user_id), suggest(str(user_id), self.user_ids, sorted_candidates=self._sorted_ids("user"))
            )
        return list(self.datamodule.sequences[u])

    def _history_indices(self, item_ids: Sequence[str]) -> list[int]:
        if isinstance(item_ids, str):
            item_ids = [x for x in item_ids.split(",") if x.strip()]
        ids = [str(x).strip() for x in item_ids]
        if not ids:
            raise EmptyHistoryError()
        unknown = [x for x in dict.fromkeys(ids) if x not in self._item_index]
        if unknown:
            ordered = self._sorted_ids("item")
            raise UnknownItemsError(
                unknown, {u: suggest(u, self.item_ids, n=2, sorted_candidates=ordered) for u in unknown[:5]}
            )
        return [self._item_index[x] for x in ids]

    def _queries(self, histories: Sequence[Sequence[int]], users: Sequence[int]) -> torch.Tensor:
        if not isinstance(self.datamodule, QueryBatchSource):  # checked at construction; kept for subclasses
            raise not_servable(servability_problem(self.model, self.datamodule) or "", self._checkpoint_path)
        batch = self.datamodule.query_batch([list(h) for h in histories], list(users))
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.inference_mode():
            q = self.model.query_vectors(batch)
        return q.detach().float()

    def user_vectors(self, user_ids: Sequence[str]) -> torch.Tensor:
        """``(B, d)`` query vectors of known users (from their whole history)."""
        hists = [self._history_of(u) for u in user_ids]
        return self._queries(hists, [self._user_index[str(u)] for u in user_ids]).cpu()

    def history_vectors(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(B, d)`` query vectors of new users given as item-id histories (oldest first)."""
        hists = [self._history_indices(h) for h in histories]
        return self._queries(hists, [-1] * len(hists)).cpu()

    # ----------------------------------------------------------------- ranking
    def topk(
        self,
        histories: Sequence[Sequence[int]],
        k: int = 10,
        *,
        users: Sequence[int] | None = None,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for histories of item indices (1..N): ``(scores (B, k), item indices (B, k))``; missing
        results (catalogue smaller than ``k`` + history) hold ``-inf`` / 0."""
        if isinstance(k, bool) or int(k) < 1:
            raise RecommenderError(f"k must be a positive integer; got {k!r}.")
        k = int(k)
        users = list(users) if users is not None else [-1] * len(histories)
        q = self._queries(histories, users)
        if self.index is not None:
            exclude = [{i - 1 for i in h} for h in histories] if exclude_history else None
            scores, rows = self.index.search(q.cpu().numpy(), k, exclude)
            return scores, np.where(rows >= 0, rows + 1, 0)
        return self._exact_topk(q, histories, k, exclude_history)

    def _exact_topk(
        self,
        q: torch.Tensor,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_history: bool,
        chunk: int = 1 << 18,
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_topk(q, self._items, histories, k, exclude_history, chunk)

    def _format(self, scores: np.ndarray, idx: np.ndarray) -> list[Recommendation]:
        out = []
        for srow, irow in zip(scores, idx):
            out.append(
                [(self.item_ids[i - 1], float(s)) for s, i in zip(srow, irow) if i > 0 and np.isfinite(s)]
            )
        return out

    def recommend_user(self, user_id: str, k: int = 10, *, exclude_history: bool = True) -> Recommendation:
        """Top-``k`` ``(item_id, score)`` for a known user; their history is the query and is masked.

        Raises:
            UnknownUserError: with close ids as suggestions.

        Example:
            >>> rec.recommend_user("u001", k=2)  # doctest: +SKIP
            [('i042', 7.31), ('i017', 6.88)]
        """
        return self.recommend_many(users=[user_id], k=k, exclude_history=exclude_history)[0]

    def recommend_history(
        self, item_ids: Sequence[str], k: int = 10, *, exclude_history: bool = True
    ) -> Recommendation:
        """Top-``k`` for a new user described by the item ids they interacted with (oldest first).

        Raises:
            EmptyHistoryError, UnknownItemsError.

        Example:
            >>> rec.recommend_history(["i001", "i002"], k=2)  # doctest: +SKIP
            [('i003', 8.1), ('i004', 7.9)]
        """
        return self.recommend_many(histories=[item_ids], k=k, exclude_history=exclude_history)[0]

    def recommend_many(
        self,
        users: Sequence[str] | None = None,
        histories: Sequence[Sequence[str]] | None = None,
        k: int = 10,
        *,
        exclude_history: bool = True,
        batch_size: int = 256,
    ) -> list[Recommendation]:
        """Batched recommendations for known users and / or new-user histories (users first, in order).

        Args:
            users: known user ids.
            histories: new users as lists of item ids.
            k: items per list.
            exclude_history: mask the items of the history.
            batch_size: queries per model / index call.

        Returns:
            One ``[(item_id, score), ...]`` list per request.

        Raises:
            UnknownUserError, UnknownItemsError, EmptyHistoryError: for the first bad request (use the CLI's
            users file to serve the good ones and report the bad ones).
        """
        reqs: list[tuple[list[int], int]] = [
            (self._history_of(u), self._user_index[str(u)]) for u in (users or [])
        ]
        reqs += [(self._history_indices(h), -1) for h in (histories or [])]
        out: list[Recommendation] = []
        for start in range(0, len(reqs), batch_size):
            part = reqs[start : start + batch_size]
            scores, idx = self.topk(
                [h for h, _ in part], k, users=[u for _, u in part], exclude_history=exclude_history
            )
            out.extend(self._format(scores, idx))
        return out
