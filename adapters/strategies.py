"""Transfer strategies for a pre-trained mmrec ``SequentialRecommender`` (Adapter4Rec / IISAN benchmarks).

A strategy decides what trains when a model pre-trained on a source domain is moved to a target domain.
It is named by one registry key: either one of the two strategies that are not adapters
(:data:`TRANSFER_STRATEGIES`) or the key of an adapter method (:data:`~mmrec.adapters.registry.ADAPTERS`),
which then trains on the frozen pre-trained model:

==========================  ==================================================================================
key                         what trains
==========================  ==================================================================================
``transfer/scratch``        everything, after re-initialising every parameter (no pre-training)
``transfer/full``           everything (in the ``where`` towers; ``None`` = whole model)
``head/linear``             identity-initialised linear maps on query and/or item vectors
``bottleneck/houlsby``      serial bottleneck adapters after attention and FFN (+ the item encoder)
``bottleneck/pfeiffer``     serial bottleneck adapters after the FFN (+ the item encoder)
``bottleneck/parallel``     parallel bottleneck adapters (+ the item encoder)
``lora/peft``               LoRA (peft) on ``qkv`` / ``attn_out`` (+ the item projectors' Linears)
``prompt/soft``             soft prompt vectors before the sequence
``prompt/prefix``           per-block key/value prefixes
``side/iisan``              an IISAN-style side network beside the frozen, never-differentiated backbone
==========================  ==================================================================================

``where`` picks the towers (``"item"``: the ``ItemEncoder``, ``"sequence"``: the ``CausalTransformer``;
``None`` = every tower the method applies to), ``tune_layer_norm=True`` also trains the LayerNorms of the
chosen towers. Adapter modules are registered on the model as ``model.adapters`` so that Lightning trains,
moves and checkpoints them; apply the strategy *before* loading a checkpoint saved with it.

Example:
    >>> from mmrec.models import SASRec
    >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
    >>> applied = apply_strategy(m, "bottleneck/pfeiffer", where=("sequence",))
    >>> applied.trainable
    ['adapters.encoder-blocks-0-ffn_out.down.weight', 'adapters.encoder-blocks-0-ffn_out.down.bias', \
'adapters.encoder-blocks-0-ffn_out.up.weight', 'adapters.encoder-blocks-0-ffn_out.up.bias']
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmrec.adapters.freeze import TrainableReport, layer_norm_params, set_trainable, trainable_report
from mmrec.adapters.handle import AdapterHandle
from mmrec.adapters.head import require_sequential
from mmrec.adapters.insertion import Where, normalize_where
from mmrec.adapters.registry import ADAPTERS
from mmrec.nn.item_encoder import ItemEncoder
from mmrec.registry import Registry

ATTACH_AS = "adapters"
TOWER_PREFIX = {"item": "items", "sequence": "encoder"}


@dataclass
class AppliedStrategy:
    """What :func:`apply_strategy` did.

    Attributes:
        name: registry key (``transfer/houlsby``...).
        handle: the adapter handle (``disable()``, ``remove()``...), ``None`` for scratch / full.
        trainable: exact names of the trainable parameters of the model afterwards.
        report: :class:`~mmrec.adapters.freeze.TrainableReport` (``print(applied.report)``).
        where: towers the strategy acted on.
        tune_layer_norm: whether LayerNorms of those towers train.
    """

    name: str
    handle: AdapterHandle | None
    trainable: list[str]
    report: TrainableReport
    where: tuple[str, ...]
    tune_layer_norm: bool
    config: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name} on {list(self.where)}: {self.report}"


StrategyBuilder = Callable[..., AppliedStrategy]
TRANSFER_STRATEGIES: Registry[AppliedStrategy] = Registry(
    "transfer strategy", packages=("mmrec.adapters",), entry_point_group="mmrec.strategies"
)
"""The strategies that are not adapter methods: ``transfer/scratch`` and ``transfer/full``."""


def _towers(where: Where) -> tuple[str, ...]:
    scopes = normalize_where(where)
    if scopes is None:
        return ("item", "sequence")
    bad = [s for s in scopes if s not in TOWER_PREFIX]
    if bad:
        raise ValueError(f"transfer strategies act on towers 'item' and/or 'sequence', got {list(scopes)}.")
    return scopes


def _touched(handle: AdapterHandle) -> tuple[str, ...]:
    """Towers whose modules the handle's sites belong to."""
    out = []
    for tower, prefix in TOWER_PREFIX.items():
        if any(site == prefix or site.startswith(prefix + ".") for site in handle.sites):
            out.append(tower)
    return tuple(out)


def _ln_names(model: nn.Module, towers: tuple[str, ...]) -> list[str]:
    return [n for t in towers for n in layer_norm_params(model, TOWER_PREFIX[t])]


def _finish(
    model: nn.Module,
    name: str,
    handle: AdapterHandle | None,
    towers: tuple[str, ...],
    tune_layer_norm: bool,
    config: dict[str, Any],
) -> AppliedStrategy:
    if tune_layer_norm:
        set_trainable(model, _ln_names(model, towers), True)
    report = trainable_report(model)
    return AppliedStrategy(name, handle, list(report["names"]), report, towers, tune_layer_norm, dict(config))


def reinitialize(model: nn.Module) -> None:
    """Re-draw every parameter as at construction (``reset_parameters`` of each module; mmrec item ID
    embeddings ``N(0, 1/d)`` with a zero padding row)."""
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and m is not model:
            reset()
    for m in model.modules():
        if isinstance(m, ItemEncoder) and m.id_embedding is not None:
            nn.init.normal_(m.id_embedding.weight, std=m.dim**-0.5)
            with torch.no_grad():
                m.id_embedding.weight[0].zero_()


@TRANSFER_STRATEGIES.register("transfer/scratch")
def scratch(
    model: nn.Module, *, where: Where = None, tune_layer_norm: bool = False, **cfg: Any
) -> AppliedStrategy:
    """No pre-training: re-initialise every parameter and train everything (``where`` must be None;
    ``tune_layer_norm`` is moot: LayerNorms train anyway)."""
    require_sequential(model)
    if where is not None or cfg:
        raise ValueError("transfer/scratch trains the whole re-initialised model: give no where= or options.")
    reinitialize(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return _finish(model, "transfer/scratch", None, ("item", "sequence"), True, {})


@TRANSFER_STRATEGIES.register("transfer/full")
def full(
    model: nn.Module, *, where: Where = None, tune_layer_norm: bool = False, **cfg: Any
) -> AppliedStrategy:
    """Full fine-tuning of the ``where`` towers (``None`` = every parameter of the model); LayerNorms of
    those towers train regardless of ``tune_layer_norm``."""
    require_sequential(model)
    if cfg:
        raise TypeError(f"transfer/full takes no options, got {sorted(cfg)}.")
    if where is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return _finish(model, "transfer/full", None, ("item", "sequence"), True, {})
    towers = _towers(where)
    prefixes = tuple(TOWER_PREFIX[t] + "." for t in towers)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(prefixes))
    return _finish(model, "transfer/full", None, towers, True, {})


def _adapter_strategy(
    model: nn.Module, key: str, *, where: Where = None, tune_layer_norm: bool = False, **cfg: Any
) -> AppliedStrategy:
    """Freeze the pre-trained model and insert the adapter method ``key`` into the ``where`` towers."""
    require_sequential(model)
    meta = ADAPTERS.meta(key)
    if tune_layer_norm and meta.get("trains_backbone_norms", True) is False:
        raise ValueError(
            f"{key} never differentiates the backbone, so its LayerNorms cannot train: use "
            "tune_layer_norm=False (the method has its own trainable LayerNorm)."
        )
    towers = _towers(where)
    given = towers if where is not None else meta.get("default_where")
    handle = ADAPTERS.get(key)(model, where=given, attach_as=ATTACH_AS, **cfg)
    if where is None:
        towers = _touched(handle)
    return _finish(model, key, handle, towers, tune_layer_norm, cfg)


def strategy_label(key: str) -> str:
    """The short name a result table shows for a strategy key (``lora/peft`` -> ``lora``)."""
    if key in ADAPTERS:
        return str(ADAPTERS.meta(key).get("label", key.split("/", 1)[1]))
    return key.split("/", 1)[-1]


def strategy_keys() -> list[str]:
    """Every name :func:`apply_strategy` accepts: the two non-adapter strategies and every adapter key."""
    return [*TRANSFER_STRATEGIES.list(), *ADAPTERS.list()]


def apply_strategy(
    model: nn.Module,
    name: str,
    *,
    where: Where = None,
    tune_layer_norm: bool = False,
    **cfg: Any,
) -> AppliedStrategy:
    """Apply a registered transfer strategy to a pre-trained sequential recommender, in place.

    Args:
        model: an mmrec ``SequentialRecommender`` (anything with ``.items`` ItemEncoder and ``.encoder``
            CausalTransformer), with its pre-trained weights loaded.
        name: ``transfer/scratch``, ``transfer/full`` or an adapter key (``"bottleneck/houlsby"``,
            ``"lora/peft"``...); :func:`strategy_keys` lists them.
        where: towers (``"item"``, ``"sequence"``); ``None`` = all the method applies to.
        tune_layer_norm: also train the LayerNorms of those towers.
        **cfg: the method's options (``reduction_factor=16``, ``r=4``, ``n_tokens=8``...).

    Returns:
        an :class:`AppliedStrategy` with the handle and the exact trainable parameter names.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
        >>> print(apply_strategy(m, "lora/peft", r=2).report)  # doctest: +ELLIPSIS
        trainable 192 / ... parameters (...%) in 4 tensors
    """
    if name in TRANSFER_STRATEGIES:
        return TRANSFER_STRATEGIES.get(name)(model, where=where, tune_layer_norm=tune_layer_norm, **cfg)
    if name in ADAPTERS:
        return _adapter_strategy(model, name, where=where, tune_layer_norm=tune_layer_norm, **cfg)
    close = difflib.get_close_matches(name, strategy_keys(), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"unknown transfer strategy {name!r}.{hint} Known: {', '.join(strategy_keys())}.")
