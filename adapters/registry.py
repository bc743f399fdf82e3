"""The adapter registry: one key per parameter-efficient method, used everywhere (VIP5, transfer, Python).

Keys: ``bottleneck/houlsby``, ``bottleneck/pfeiffer``, ``bottleneck/parallel``, ``lora/peft``,
``prompt/soft``, ``prompt/prefix``, ``side/iisan``, ``head/linear``. Each method's module registers its
builder itself; the registry imports the modules of :mod:`mmrec.adapters` (and of the ``mmrec.adapters``
entry-point group) on its first lookup.

Builder contract: ``builder(model, *, where=None, freeze_backbone=True, attach_as=None, **options)
-> AdapterHandle``; ``options`` are the fields of the method's config dataclass.

Registration metadata: ``method`` (bottleneck / lora / prompt / side / head), ``trains_backbone_norms``
(False when the method never differentiates the backbone, so its LayerNorms cannot train),
``default_where`` (towers of an mmrec sequential model the method acts on when none are given),
``label`` (the short name result tables show: ``houlsby``, ``lora``...).

Example:
    >>> "bottleneck/houlsby" in ADAPTERS.list("bottleneck/*")
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmrec.registry import Registry

ADAPTERS: Registry[Any] = Registry(
    "adapter", packages=("mmrec.adapters",), entry_point_group="mmrec.adapters"
)


def create_adapter(name: str, model: nn.Module, /, **options: Any) -> Any:
    """Insert the adapter method registered as ``name`` into ``model``.

    Args:
        name: a key of :data:`ADAPTERS` (``"bottleneck/houlsby"``, ``"lora/peft"``...).
        model: the backbone.
        **options: the method's keyword arguments (``where=``, ``freeze_backbone=``, ``attach_as=``) and
            config fields (``reduction_factor=``, ``tasks=``, ``r=``, ``n_tokens=``...).

    Returns:
        the method's :class:`~mmrec.adapters.handle.AdapterHandle`.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
        >>> create_adapter("bottleneck/pfeiffer", m, where="sequence").sites
        ['encoder.blocks.0.ffn_out']
    """
    return ADAPTERS.get(name)(model, **options)
