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
from mmrec.models.transferable import TransferableRecommender
from mmrec.models.vip5 import VIP5
from mmrec.models.vip5_ranking import VIP5Ranking
from mmrec.registry import Registry

MODELS: Registry[RecommenderModule] = Registry("model")
MODELS.register("sequential/sasrec")(SASRec)
MODELS.register("sequential/multimodal")(MultimodalSequential)
MODELS.register("sequential/transferable")(TransferableRecommender)
MODELS.register("vip5/t5")(VIP5)
MODELS.register("vip5/ranking")(VIP5Ranking)


def create_model(name: str, /, **kwargs: Any) -> RecommenderModule:
    """Build a registered model, e.g. ``create_model("sequential/sasrec", catalog=dm.catalog)``."""
    return MODELS.create(name, **kwargs)


__all__ = [
    "MODELS",
    "VIP5",
    "MultimodalSequential",
    "RecommenderModule",
    "SASRec",
    "SequentialRecommender",
    "TransferableRecommender",
    "VIP5Ranking",
    "create_model",
]
