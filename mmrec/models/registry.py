"""The model registry: every recommender (baselines included) under one ``family/name`` key.

A model module registers its classes itself (``@MODELS.register("sequential/sasrec")`` on the class);
the registry finds them by importing the modules of :mod:`mmrec.models` (and of the ``mmrec.models``
entry-point group) on the first lookup.

Example:
    >>> m = create_model("sequential/sasrec", catalog={"num_items": 10, "num_users": 2}, dim=16, num_layers=1)
    >>> type(m).__name__, MODELS.key_of(type(m))
    ('SASRec', 'sequential/sasrec')
"""

from __future__ import annotations

from typing import Any

from mmrec.registry import Registry

MODELS: Registry[Any] = Registry("model", packages=("mmrec.models",), entry_point_group="mmrec.models")


def create_model(name: str, /, **kwargs: Any) -> Any:
    """Build a registered model, e.g. ``create_model("sequential/sasrec", catalog=dm.catalog)``.

    Args:
        name: a key of :data:`MODELS` (``mmrec models`` / ``MODELS.list()`` lists them).
        **kwargs: the model's constructor arguments (``catalog`` first of all).
    """
    return MODELS.create(name, **kwargs)


def model_class(name: str) -> type:
    """The class registered under ``name`` (for ``load_from_checkpoint`` and configs)."""
    return MODELS.get(name)  # type: ignore[return-value]
