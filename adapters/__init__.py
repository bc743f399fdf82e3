"""Parameter-efficient adaptation of frozen backbones: bottleneck adapters, LoRA, prompts, side networks.

Every method inserts into a backbone without renaming its weights (forward hooks; LoRA through peft) and
returns an :class:`AdapterHandle` with the trainable ``modules``, ``disable()`` (exact base output),
``route(task_ids)`` (per-task adapters, per sample) and ``remove()``.

Two registries:

- :data:`ADAPTERS` (``create_adapter(key, model, **options)``): ``bottleneck/houlsby``,
  ``bottleneck/pfeiffer``, ``bottleneck/parallel``, ``lora/peft``, ``prompt/soft``, ``prompt/prefix``,
  ``side/iisan``, ``head/linear``.
- :data:`TRANSFER_STRATEGIES` (``apply_strategy(model, key, where=..., tune_layer_norm=...)``) for a
  pre-trained mmrec ``SequentialRecommender``: ``transfer/scratch``, ``transfer/full``,
  ``transfer/linear-head``, ``transfer/houlsby``, ``transfer/pfeiffer``, ``transfer/parallel``,
  ``transfer/lora``, ``transfer/prompt``, ``transfer/prefix``, ``transfer/side``.

Example:
    >>> from mmrec.adapters import create_adapter, trainable_report
    >>> from mmrec.models import SASRec
    >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=2)
    >>> handle = create_adapter("bottleneck/houlsby", m, where=("sequence",), reduction_factor=4)
    >>> print(trainable_report(m, handle.modules))  # doctest: +ELLIPSIS
    trainable 592 / ... parameters (...%) in 16 tensors
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmrec.adapters.bottleneck import BottleneckAdapter, BottleneckConfig
from mmrec.adapters.freeze import (
    TrainableReport,
    freeze_all_but,
    layer_norm_params,
    set_trainable,
    trainable_names,
    trainable_report,
)
from mmrec.adapters.handle import AdapterHandle
from mmrec.adapters.head import LinearHead, insert_linear_heads
from mmrec.adapters.insertion import (
    InsertionPoint,
    available_scopes,
    detect_family,
    find_insertion_points,
    insert_adapters,
)
from mmrec.adapters.lora import LoraAdapterConfig, LoraHandle, insert_lora, resolve_lora_targets
from mmrec.adapters.projector import VisualProjector, VisualProjectorConfig
from mmrec.adapters.prompt import (
    PeftPromptHandle,
    PrefixKV,
    PromptConfig,
    SoftPrompt,
    insert_prefix,
    insert_soft_prompt,
)
from mmrec.adapters.routing import TaskAdapters, TaskRouter
from mmrec.adapters.side import SideConfig, SideHandle, insert_side_network
from mmrec.adapters.strategies import TRANSFER_STRATEGIES, AppliedStrategy, apply_strategy, reinitialize
from mmrec.registry import Registry

ADAPTERS: Registry[AdapterHandle] = Registry("adapter")


def _placement(placement: str) -> Any:
    def build(model: nn.Module, **options: Any) -> AdapterHandle:
        return insert_adapters(model, placement, **options)

    build.__name__ = f"insert_{placement}_adapters"
    build.__doc__ = f"``insert_adapters(model, {placement!r}, **options)``."
    return build


ADAPTERS.register("bottleneck/houlsby", method="bottleneck")(_placement("houlsby"))
ADAPTERS.register("bottleneck/pfeiffer", method="bottleneck")(_placement("pfeiffer"))
ADAPTERS.register("bottleneck/parallel", method="bottleneck")(_placement("parallel"))
ADAPTERS.register("lora/peft", method="lora")(insert_lora)
ADAPTERS.register("prompt/soft", method="prompt")(insert_soft_prompt)
ADAPTERS.register("prompt/prefix", method="prompt")(insert_prefix)
ADAPTERS.register("side/iisan", method="side")(insert_side_network)
ADAPTERS.register("head/linear", method="head")(insert_linear_heads)


def create_adapter(name: str, model: nn.Module, /, **options: Any) -> AdapterHandle:
    """Insert the adapter method registered as ``name`` into ``model``.

    Args:
        name: a key of :data:`ADAPTERS` (``"bottleneck/houlsby"``, ``"lora/peft"``...).
        model: the backbone.
        **options: the method's keyword arguments (``where=``, ``freeze_backbone=``, ``attach_as=``) and
            config fields (``reduction_factor=``, ``tasks=``, ``r=``, ``n_tokens=``...).

    Returns:
        the method's :class:`AdapterHandle`.
    """
    return ADAPTERS.get(name)(model, **options)


__all__ = [
    "ADAPTERS",
    "TRANSFER_STRATEGIES",
    "AdapterHandle",
    "AppliedStrategy",
    "BottleneckAdapter",
    "BottleneckConfig",
    "InsertionPoint",
    "LinearHead",
    "LoraAdapterConfig",
    "LoraHandle",
    "PeftPromptHandle",
    "PrefixKV",
    "PromptConfig",
    "SideConfig",
    "SideHandle",
    "SoftPrompt",
    "TaskAdapters",
    "TaskRouter",
    "TrainableReport",
    "VisualProjector",
    "VisualProjectorConfig",
    "apply_strategy",
    "available_scopes",
    "create_adapter",
    "detect_family",
    "find_insertion_points",
    "freeze_all_but",
    "insert_adapters",
    "insert_linear_heads",
    "insert_lora",
    "insert_prefix",
    "insert_side_network",
    "insert_soft_prompt",
    "layer_norm_params",
    "reinitialize",
    "resolve_lora_targets",
    "set_trainable",
    "trainable_names",
    "trainable_report",
]
