"""Recommender models (LightningModules) and their registry.

Every model registers itself under a ``family/name`` key (:data:`MODELS`); classes are also reachable by
name from this package (``from mmrec.models import SASRec``), resolved through the registry, so adding a
model is one new module and nothing here changes.

Example:
    >>> from mmrec.models import create_model, MODELS
    >>> m = create_model("sequential/sasrec", catalog={"num_items": 10, "num_users": 2}, dim=16, num_layers=1)
    >>> "sequential/sasrec" in MODELS.list("sequential/*")
    True
"""

from __future__ import annotations

from typing import Any

from mmrec.models.base import RecommenderModule
from mmrec.models.registry import MODELS, create_model, model_class


def __getattr__(name: str) -> Any:
    """``mmrec.models.<ClassName>`` for any registered model class."""
    for key in MODELS:
        cls = MODELS.get(key)
        if getattr(cls, "__name__", None) == name:
            return cls
    raise AttributeError(f"module 'mmrec.models' has no attribute {name!r}")


__all__ = ["MODELS", "RecommenderModule", "create_model", "model_class"]
