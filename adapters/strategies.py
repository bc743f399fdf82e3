"""Transfer strategies for a pre-trained mmrec ``SequentialRecommender`` (Adapter4Rec / IISAN benchmarks).

A strategy decides what trains when a model pre-trained on a source domain is moved to a target domain:

==========================  ==================================================================================
key                         what trains
==========================  ==================================================================================
``transfer/scratch``        everything, after re-initialising every parameter (no pre-training)
``transfer/full``           everything (in the ``where`` towers; ``None`` = whole model)
``transfer/linear-head``    identity-initialised linear maps on query and/or item vectors
``transfer/houlsby``        serial bottleneck adapters after attention and FFN (+ the item encoder)
``transfer/pfeiffer``       serial bottleneck adapters after the FFN (+ the item encoder)
``transfer/parallel``       parallel bottleneck adapters (+ the item encoder)
``transfer/lora``           LoRA (peft) on ``qkv`` / ``attn_out`` (+ the item projectors' Linears)
``transfer/prompt``         soft prompt vectors before the sequence
``transfer/prefix``         per-block key/value prefixes
``transfer/side``           an IISAN-style side network beside the frozen, never-differentiated backbone
==========================  ==================================================================================

``where`` picks the towers (``"item"``: the ``ItemEncoder``, ``"sequence"``: the ``CausalTransformer``;
``None`` = every tower the method applies to), ``tune_layer_norm=True`` also trains the LayerNorms of the
chosen towers. Adapter modules are registered on the model as ``model.adapters`` so that Lightning trains,
moves and checkpoints them; apply the strategy *before* loading a checkpoint saved with it.

Example:
    >>> from mmrec.models import SASRec
    >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
    >>> applied = apply_strategy(m, "transfer/pfeiffer", where=("sequence",))
    >>> applied.trainable
    ['adapters.encoder-blocks-0-ffn_out.down.weight', 'adapters.encoder-blocks-0-ffn_out.down.bias', \
'adapters.encoder-blocks-0-ffn_out.up.weight', 'adapters.encoder-blocks-0-ffn_out.up.bias']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmrec.adapters.freeze import TrainableReport, layer_norm_params, set_trainable, trainable_report
from mmrec.adapters.handle import AdapterHandle
from mmrec.adapters.head import insert_linear_heads, require_sequential
from mmrec.adapters.insertion import Where, insert_adapters, normalize_where
from mmrec.adapters.lora import insert_lora
from mmrec.adapters.prompt import insert_prefix, insert_soft_prompt
from mmrec.adapters.side import insert_side_network
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
TRANSFER_STRATEGIES: Registry[AppliedStrategy] = Registry("transfer strategy")


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
    from mmrec.nn.item_encoder import ItemEncoder

    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and m is not model:
            reset()
    for m in model.modules():
        if isinstance(m, ItemEncoder) and m.id_embedding is not None:
            nn.init.normal_(m.id_embedding.weight, std=m.dim**-0.5)
            with torch.no_grad():
                m.id_embedding.weight[0].zero_()


def _frozen_adapter_strategy(name: str, insert: Callable[..., AdapterHandle]) -> StrategyBuilder:
    def build(
        model: nn.Module, *, where: Where = None, tune_layer_norm: bool = False, **cfg: Any
    ) -> AppliedStrategy:
        require_sequential(model)
        towers = _towers(where)
        handle = insert(model, towers if where is not None else None, cfg)
        if where is None:
            towers = _touched(handle)
        return _finish(model, name, handle, towers, tune_layer_norm, cfg)

    build.__name__ = name.replace("/", "_").replace("-", "_")
    return build


def _bottleneck(placement: str) -> Callable[..., AdapterHandle]:
    def insert(model: nn.Module, where: Where, cfg: dict[str, Any]) -> AdapterHandle:
        return insert_adapters(model, placement, where=where, attach_as=ATTACH_AS, **cfg)

    return insert


def _lora(model: nn.Module, where: Where, cfg: dict[str, Any]) -> AdapterHandle:
    return insert_lora(model, where=where, **cfg)


def _prompt(model: nn.Module, where: Where, cfg: dict[str, Any]) -> AdapterHandle:
    return insert_soft_prompt(model, where=where or ("sequence",), attach_as=ATTACH_AS, **cfg)


def _prefix(model: nn.Module, where: Where, cfg: dict[str, Any]) -> AdapterHandle:
    return insert_prefix(model, where=where or ("sequence",), attach_as=ATTACH_AS, **cfg)


def _head(model: nn.Module, where: Where, cfg: dict[str, Any]) -> AdapterHandle:
    if cfg:
        raise TypeError(f"transfer/linear-head takes no options, got {sorted(cfg)}.")
    return insert_linear_heads(model, where=where, attach_as=ATTACH_AS)


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


TRANSFER_STRATEGIES.register("transfer/linear-head")(_frozen_adapter_strategy("transfer/linear-head", _head))
TRANSFER_STRATEGIES.register("transfer/houlsby")(
    _frozen_adapter_strategy("transfer/houlsby", _bottleneck("houlsby"))
)
TRANSFER_STRATEGIES.register("transfer/pfeiffer")(
    _frozen_adapter_strategy("transfer/pfeiffer", _bottleneck("pfeiffer"))
)
TRANSFER_STRATEGIES.register("transfer/parallel")(
    _frozen_adapter_strategy("transfer/parallel", _bottleneck("parallel"))
)
TRANSFER_STRATEGIES.register("transfer/lora")(_frozen_adapter_strategy("transfer/lora", _lora))
TRANSFER_STRATEGIES.register("transfer/prompt")(_frozen_adapter_strategy("transfer/prompt", _prompt))
TRANSFER_STRATEGIES.register("transfer/prefix")(_frozen_adapter_strategy("transfer/prefix", _prefix))


@TRANSFER_STRATEGIES.register("transfer/side")
def side(
    model: nn.Module, *, where: Where = None, tune_layer_norm: bool = False, **cfg: Any
) -> AppliedStrategy:
    """IISAN-style side network; the backbone never trains, so ``tune_layer_norm`` must be False (the side
    network's own LayerNorm trains)."""
    require_sequential(model)
    if tune_layer_norm:
        raise ValueError(
            "transfer/side never differentiates the backbone, so its LayerNorms cannot train: use "
            "tune_layer_norm=False (the side network has its own trainable LayerNorm)."
        )
    towers = _towers(where)
    handle = insert_side_network(model, where=towers, attach_as=ATTACH_AS, **cfg)
    return _finish(model, "transfer/side", handle, towers, False, cfg)


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
        name: a key of :data:`TRANSFER_STRATEGIES` (``"transfer/houlsby"``; the ``transfer/`` prefix may
            be left out).
        where: towers (``"item"``, ``"sequence"``); ``None`` = all the method applies to.
        tune_layer_norm: also train the LayerNorms of those towers.
        **cfg: the method's options (``reduction_factor=16``, ``r=4``, ``n_tokens=8``...).

    Returns:
        an :class:`AppliedStrategy` with the handle and the exact trainable parameter names.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
        >>> print(apply_strategy(m, "lora", r=2).report)  # doctest: +ELLIPSIS
        trainable 192 / ... parameters (...%) in 4 tensors
    """
    key = name if "/" in name else f"transfer/{name}"
    return TRANSFER_STRATEGIES.get(key)(model, where=where, tune_layer_norm=tune_layer_norm, **cfg)
