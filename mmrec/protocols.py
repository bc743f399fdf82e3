"""Capabilities as small Protocols: what retrieval, benchmarks and adapters may ask of models and data.

Code above the model layer never tests for a concrete class: it asks for a capability.

Model side:

- :class:`Scorer`: ``score_all(batch) -> (B, N+1)`` scores over the whole catalogue (every model);
- :class:`ItemTower` / :class:`QueryTower`: ``item_vectors()`` and ``query_vectors(batch)`` whose inner
  product is the score (models that factorise; a faiss index can serve them);
- :class:`DataConsumer`: ``attach_data(inputs)`` takes what the model needs from the data that is not in
  its checkpoint (frozen feature tables, the training interaction matrix...), from :class:`ModelInputs`;
- :class:`TrainingWindowPreference`: ``preferred_window_stride``, the training-window stride a model needs
  when the user sets none (BERT4Rec: 1, every prefix is a window).

Data side:

- :class:`CatalogSource`: ``catalog``, the plain dict that sizes a model (:mod:`mmrec.catalog`);
- :class:`ModelInputSource`: ``model_inputs() -> ModelInputs``, a lazy mapping (nothing is loaded until a
  model reads the key);
- :class:`QueryBatchSource`: ``query_batch(histories, users) -> batch``, the batch a model scores for
  given item histories (serving new users).

Example:
    >>> inputs = ModelInputs({"answer": lambda: 42})
    >>> "answer" in inputs, inputs["answer"]
    (True, 42)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

Batch = Mapping[str, Any]


@runtime_checkable
class Scorer(Protocol):
    """Scores every item of the catalogue for a batch of users / histories."""

    def score_all(self, batch: Batch, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N+1)`` scores; column 0 (padding) is ``-inf``."""
        ...


@runtime_checkable
class ItemTower(Protocol):
    """Item representations whose inner product with a query is the score."""

    def item_vectors(self) -> torch.Tensor:
        """``(N+1, d)`` item vectors; row 0 is padding."""
        ...


@runtime_checkable
class QueryTower(Protocol):
    """Query representations of a batch of users / histories."""

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        """``(B, d)`` query vectors."""
        ...


@runtime_checkable
class DataConsumer(Protocol):
    """A model that needs data besides its weights (attached by the Trainer in ``setup`` and by serving)."""

    def attach_data(self, inputs: Mapping[str, Any]) -> None:
        """Take what the model needs from ``inputs`` (a :class:`ModelInputs`)."""
        ...


@runtime_checkable
class TrainingWindowPreference(Protocol):
    """A model that needs training windows at a given stride unless the user sets one.

    BERT4Rec poses the next-item task (a ``[MASK]`` with nothing to its right, what evaluation asks) at the
    last item of each training window only: with non-overlapping windows most next-item targets are never
    posed, so it asks for stride 1 (every prefix a window, as RecBole's training-sequence augmentation).
    Sequence datamodules read it from the Trainer's model when their ``window_stride`` is ``None``.
    """

    preferred_window_stride: int


@runtime_checkable
class CatalogSource(Protocol):
    """A DataModule that describes its data to models (sizes, feature widths, domains; :mod:`mmrec.catalog`)."""

    @property
    def catalog(self) -> Mapping[str, Any]:
        """The catalogue: a plain dict LightningCLI links into the model's ``catalog`` argument."""
        ...


@runtime_checkable
class ModelInputSource(Protocol):
    """A DataModule that can give models their data inputs."""

    def model_inputs(self) -> Mapping[str, Any]:
        """A lazy mapping of model inputs (see :class:`ModelInputs` for the standard keys)."""
        ...


@runtime_checkable
class QueryBatchSource(Protocol):
    """A DataModule that builds model batches from item histories (for serving)."""

    def query_batch(self, histories: Sequence[Sequence[int]], users: Sequence[int]) -> dict[str, Any]:
        """A batch for ``histories`` (item indices 1..N, oldest first) of ``users`` (indices, or -1)."""
        ...


class ModelInputs(Mapping[str, Any]):
    """A read-only mapping whose values are computed on first access and then kept.

    Standard keys (a DataModule provides those it can):

    - ``features``: store name -> ``(features (N+1, D), valid (N+1,))`` frozen tables, row 0 padding;
    - ``train_interactions``: ``scipy.sparse.csr_matrix`` of shape ``(U, N+1)``, the training split's
      user-item counts (column 0 empty);
    - ``train_sequences``: per-user training item sequences (lists of item indices, oldest first).

    Args:
        providers: key -> zero-argument callable producing the value.
    """

    def __init__(self, providers: Mapping[str, Callable[[], Any]]) -> None:
        self._providers = dict(providers)
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._providers:
            raise KeyError(
                f"model input {key!r} is not provided by this datamodule (it provides {sorted(self._providers)}); "
                "use a datamodule that provides it or a model that does not need it."
            )
        if key not in self._values:
            self._values[key] = self._providers[key]()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)
