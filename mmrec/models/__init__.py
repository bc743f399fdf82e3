"""Recommender models (LightningModules) and their registry.

Example:
    >>> from mmrec.models import create_model, MODELS
    >>> m = create_model("sequential/sasrec", catalog={"num_items": 10, "num_users": 2}, dim=16, num_layers=1)
    >>> "sequential/sasrec" in MODELS.list("sequential/*")
    True
"""

from __future__ import annotations

from typing import Any

from mmrec.models.base import RecommenderModule
from mmrec.models.sequential import MultimodalSequential, SASRec, SequentialRecommender
from mmrec.registry import Registry

MODELS: Registry[RecommenderModule] = Registry("model")
MODELS.register("sequential/sasrec")(SASRec)
MODELS.register("sequential/multimodal")(MultimodalSequential)


def create_model(name: str, /, **kwargs: Any) -> RecommenderModule:
    """Build a registered model, e.g. ``create_model("sequential/sasrec", catalog=dm.catalog)``."""
    return MODELS.create(name, **kwargs)


__all__ = [
    "MODELS",
    "MultimodalSequential",
    "RecommenderModule",
    "SASRec",
    "SequentialRecommender",
    "create_model",
]
