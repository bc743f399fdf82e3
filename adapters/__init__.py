"""Parameter-efficient adaptation of frozen backbones: bottleneck adapters, LoRA, prompts, side networks.

Every method inserts into a backbone without renaming its weights (forward hooks; LoRA through peft) and
returns an :class:`AdapterHandle` with the trainable ``modules``, ``disable()`` (exact base output),
``route(task_ids)`` (per-task adapters, per sample) and ``remove()``.

Each method registers itself in :data:`ADAPTERS` under one key, the only name it has anywhere (VIP5's
``adapter:``, transfer strategies, Python): ``bottleneck/houlsby``, ``bottleneck/pfeiffer``,
``bottleneck/parallel``, ``lora/peft``, ``prompt/soft``, ``prompt/prefix``, ``side/iisan``,
``head/linear`` (``create_adapter(key, model, **options)``).

Transfer of a pre-trained mmrec sequential model (``apply_strategy(model, key, where=...,
tune_layer_norm=...)``) accepts any adapter key (the backbone is frozen, the adapter trains) plus the two
strategies that are not adapters, :data:`TRANSFER_STRATEGIES`: ``transfer/scratch`` and ``transfer/full``.

Example:
    >>> from mmrec.adapters import create_adapter, trainable_report
    >>> from mmrec.models import SASRec
    >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=2)
    >>> handle = create_adapter("bottleneck/houlsby", m, where=("sequence",), reduction_factor=4)
    >>> print(trainable_report(m, handle.modules))  # doctest: +ELLIPSIS
    trainable 592 / ... parameters (...%) in 16 tensors
"""

from __future__ import annotations

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
from mmrec.adapters.registry import ADAPTERS, create_adapter
from mmrec.adapters.routing import TaskAdapters, TaskRouter
from mmrec.adapters.side import SideConfig, SideHandle, insert_side_network
from mmrec.adapters.strategies import TRANSFER_STRATEGIES, AppliedStrategy, apply_strategy, reinitialize

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
