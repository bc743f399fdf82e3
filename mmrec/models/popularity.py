"""MostPop: rank every item by its popularity in the training split, the same list for every user.

The floor every recommender must clear (DESIGN §6): a model that does not beat MostPop under the same protocol
has learned nothing personal. MostPop has no trainable parameters (``requires_training = False``, see
:mod:`mmrec.models.base`): ``mmrec fit`` runs one optimizer-free epoch, one validation and stops; the
popularity comes from ``attach_data(inputs)`` with ``inputs["train_interactions"]`` (training split only, so
validation and test interactions never leak into it).

Ties: items with equal training counts are ordered by item index (lower first), so the ranking is a strict
order. Without this, the evaluator's pessimistic tie rule (a target ranks below every item scored equal)
would put a target among the many equally rare tail items at the bottom of its tie block: an artificially
weak baseline is exactly what this one must not be. (RecBole's Pop breaks ties by ``torch.topk``'s order.)

Example:
    >>> import scipy.sparse as sp
    >>> m = MostPop(catalog={"num_items": 4, "num_users": 2})
    >>> m.attach_data({"train_interactions": sp.csr_matrix([[0, 1, 0, 2, 0], [0, 1, 0, 1, 1]])})
    >>> # training counts: item 3 three times, item 1 twice, item 4 once, item 2 never
    >>> m.score_all({"input_ids": torch.tensor([[1, 2]])})[0, 1:].argsort(descending=True).add(1).tolist()
    [3, 1, 4, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from mmrec.models.base import RecommenderModule
from mmrec.models.registry import MODELS


@MODELS.register("baseline/mostpop")
class MostPop(RecommenderModule):
    """Training-split popularity as the score of every item, for every user.

    Args:
        catalog: from the datamodule (``num_items``, ``num_users``); linked by the CLI.
        count: ``interactions`` (every training interaction counts, repeats included; RecBole's Pop) or
            ``users`` (distinct users per item).
        eval_ks: metric cut-offs.
        predict_k: items returned per user by ``predict``.
    """

    requires_training: ClassVar[bool] = False
    popularity: torch.Tensor  # buffers (register_buffer in __init__)
    scores_: torch.Tensor

    def __init__(
        self,
        catalog: dict[str, Any] | None = None,
        count: str = "interactions",
        eval_ks: Sequence[int] = (5, 10, 20),
        predict_k: int = 10,
    ) -> None:
        super().__init__(catalog=catalog, eval_ks=eval_ks, predict_k=predict_k)
        if count not in ("interactions", "users"):
            raise ValueError(f"count must be 'interactions' or 'users', got {count!r}.")
        self.save_hyperparameters()
        self.count = count
        # (N+1,) scores, row 0 padding; a buffer, so checkpoints hold what was computed from the data
        self.register_buffer("popularity", torch.zeros(self.num_items + 1))
        self.register_buffer("scores_", torch.zeros(self.num_items + 1))
        self._attached = False

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Count the training split's interactions per item (``inputs["train_interactions"]``, ``(U, N+1)``)."""
        matrix = inputs["train_interactions"]
        if matrix.shape[1] != self.num_items + 1:
            raise ValueError(
                f"train_interactions has {matrix.shape[1]} columns, the catalogue {self.num_items + 1} (with "
                "padding): the model and the datamodule describe different catalogues."
            )
        if self.count == "users":
            matrix = matrix.copy()
            matrix.data[:] = 1.0
        counts = torch.as_tensor(np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel())
        self.set_popularity(counts)

    def set_popularity(self, counts: torch.Tensor) -> None:
        """Set the per-item counts ``(N+1,)`` directly (column 0 ignored) and derive the tie-free scores."""
        counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
        n = self.num_items
        order = torch.argsort(-counts[1:], stable=True)  # most popular first, lower index first among ties
        scores = torch.empty(n, dtype=torch.float64)
        scores[order] = torch.arange(n, 0, -1, dtype=torch.float64) / n  # strict order in (0, 1]
        self.popularity.copy_(counts.to(self.popularity.dtype))
        self.scores_.zero_()
        self.scores_[1:] = scores.to(self.scores_.dtype)
        self._attached = True
        self._reset_cache()

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, 1)``: each item's popularity score (row 0 padding)."""
        if not self._attached:
            raise RuntimeError(
                "MostPop has no popularity yet: call model.attach_data(datamodule.model_inputs()) (the Trainer "
                "does it in setup) or load a checkpoint."
            )
        return self.scores_.unsqueeze(1)

    def query_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 1)`` ones: every user gets the same list."""
        return torch.ones(batch["input_ids"].shape[0], 1, device=self.scores_.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._attached = True
