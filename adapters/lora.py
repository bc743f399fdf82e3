"""LoRA (Hu et al. 2022) through ``peft``: low-rank updates ``W x + (alpha / r) B A x`` on chosen Linears.

``peft.inject_adapter_in_model`` wraps each targeted ``nn.Linear`` in a ``peft`` LoRA layer in place (the
base weight moves to ``<name>.base_layer.weight``; :meth:`LoraHandle.remove` puts the original modules
back, names included). ``B`` starts at zero, so a fresh LoRA is an exact identity.

Default targets per family: T5 ``q``, ``v``; BERT-like ``query``, ``value``; mmrec sequence encoder ``qkv``,
``attn_out``; mmrec item encoder: the Linear layers of its feature projectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, cast

from torch import nn

from mmrec.adapters.handle import AdapterHandle
from mmrec.adapters.insertion import Where, find_insertion_points, normalize_where
from mmrec.adapters.registry import ADAPTERS

DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "t5": ("q", "v"),
    "bert": ("query", "value"),
    "mmrec": ("qkv", "attn_out"),
}


@dataclass
class LoraAdapterConfig:
    """Settings of LoRA adapters.

    Args:
        r: rank of the update.
        alpha: scale numerator (the update is multiplied by ``alpha / r``).
        dropout: dropout on the LoRA branch input.
        target_modules: module-name suffixes to adapt (``("q", "k", "v", "o")``); ``None`` = the family
            defaults (see module docstring). Matched within the selected ``where`` scopes only.
        bias: ``none``, ``lora_only`` or ``all`` (peft's meaning).

    Example:
        >>> LoraAdapterConfig(r=4, alpha=8).scaling
        2.0
    """

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: Sequence[str] | None = None
    bias: str = "none"

    def __post_init__(self) -> None:
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"r must be a positive integer, got {self.r!r}.")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.bias not in ("none", "lora_only", "all"):
            raise ValueError(f"bias must be 'none', 'lora_only' or 'all', got {self.bias!r}.")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                raise TypeError(f"target_modules must be a list, e.g. [{self.target_modules!r}].")
            self.target_modules = tuple(self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules is empty; give names or None for the family defaults.")

    @property
    def scaling(self) -> float:
        """``alpha / r``."""
        return self.alpha / self.r


def _matches(name: str, suffixes: Sequence[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def resolve_lora_targets(
    model: nn.Module, config: LoraAdapterConfig | None = None, where: Where = None
) -> list[str]:
    """Full names of the ``nn.Linear`` modules LoRA would adapt.

    Args:
        model: the backbone.
        config: its ``target_modules`` (suffixes) or the family defaults.
        where: scopes (``encoder`` / ``decoder`` / ``sequence`` / ``item``); ``None`` = all scopes that
            have targets.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 5, "num_users": 2}, dim=8, num_layers=1)
        >>> resolve_lora_targets(m)
        ['encoder.blocks.0.qkv', 'encoder.blocks.0.attn_out']
    """
    config = config or LoraAdapterConfig()
    scopes = normalize_where(where)
    points = find_insertion_points(model)
    if not points:
        raise ValueError(
            f"no supported backbone found in {type(model).__name__} (T5, BERT-like, mmrec); pass a model "
            "that contains one."
        )
    roots: dict[str, list[str]] = {}
    for p in points:
        if scopes is None or p.scope in scopes:
            roots.setdefault(p.scope, [])
            if p.block not in roots[p.scope]:
                roots[p.scope].append(p.block)
    if scopes is not None:
        missing = [s for s in scopes if s not in roots]
        if missing:
            raise ValueError(f"the model has no {missing} scope; it has {sorted({p.scope for p in points})}.")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets: list[str] = []
    empty: list[str] = []
    for scope, blocks in roots.items():
        found: list[str] = []
        for name, _ in linears:
            inside = any(b == "" or name.startswith(b + ".") for b in blocks)
            if not inside:
                continue
            if config.target_modules is not None:
                ok = _matches(name, config.target_modules)
            elif scope == "item":
                ok = ".projectors." in f".{name}"
            else:
                family = next(p.family for p in points if p.scope == scope)
                ok = _matches(name, DEFAULT_TARGETS[family])
            if ok and name not in targets:
                found.append(name)
        targets += found
        if not found:
            empty.append(scope)
    if scopes is not None and empty:
        raise ValueError(
            f"LoRA found no target Linear layers in scope(s) {empty} (targets "
            f"{list(config.target_modules) if config.target_modules else 'family defaults'}); an ID-only item "
            "encoder (SASRec) has none: leave 'item' out of where=, or set target_modules."
        )
    if not targets:
        raise ValueError(
            f"LoRA target_modules {config.target_modules} match no nn.Linear in the selected scopes; "
            f"examples of Linear names: {[n for n, _ in linears[:8]]}."
        )
    return targets


def _lora_layers(model: nn.Module, adapter_name: str) -> list[tuple[str, Any]]:  # peft BaseTunerLayer modules
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    for name, m in model.named_modules():
        if isinstance(m, BaseTunerLayer) and adapter_name in getattr(m, "lora_A", {}):
            out.append((name, m))
    return out


class LoraHandle(AdapterHandle):
    """Handle of peft LoRA layers injected in place (the LoRA weights live inside the backbone).

    :attr:`modules` is empty: the LoRA parameters are registered on the backbone itself
    (``...q.lora_A.<adapter_name>.weight``), so they train and save with it.
    """

    def __init__(self, model: nn.Module, adapter_name: str, targets: Sequence[str]) -> None:
        super().__init__(model, "lora/peft", nn.ModuleDict(), list(targets))
        self.adapter_name = adapter_name

    def layers(self) -> list[tuple[str, Any]]:
        """``(name, peft LoRA layer)`` pairs holding this adapter."""
        return _lora_layers(self.model, self.adapter_name)

    def parameter_names(self) -> list[str]:
        """LoRA parameter names relative to the backbone."""
        tag = f".{self.adapter_name}."
        return [n for n, _ in self.model.named_parameters() if "lora_" in n and tag in n]

    def parameters(self) -> Iterator[nn.Parameter]:
        named = dict(self.model.named_parameters())
        return iter([named[n] for n in self.parameter_names()])

    @contextmanager
    def disable(self) -> Iterator[None]:
        """Base model output exactly: the peft layers skip their LoRA branch (``requires_grad`` flags of
        the LoRA weights are restored afterwards)."""
        with super().disable():  # checks the handle is alive; `enabled` is False inside
            layers = [m for _, m in self.layers()]
            flags = {id(p): p.requires_grad for m in layers for p in m.parameters()}
            for m in layers:
                m.enable_adapters(False)
            try:
                yield
            finally:
                for m in layers:
                    m.enable_adapters(True)
                    for p in m.parameters():
                        p.requires_grad_(flags[id(p)])

    def set_enabled(self, enabled: bool) -> None:
        self._check_alive()
        for _, m in self.layers():
            flags = [p.requires_grad for p in m.parameters()]
            m.enable_adapters(bool(enabled))
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
        self._enabled = bool(enabled)

    def remove(self) -> None:
        """Put the original ``nn.Linear`` modules back (state_dict names as before injection)."""
        if self._removed:
            return
        for name, layer in self.layers():
            if set(layer.lora_A.keys()) == {self.adapter_name}:
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name)
                setattr(parent, child, layer.get_base_layer())
            else:
                layer.delete_adapter(self.adapter_name)
        cfg = getattr(self.model, "peft_config", None)
        if isinstance(cfg, dict):
            cfg.pop(self.adapter_name, None)
            if not cfg:
                with suppress(AttributeError):
                    delattr(self.model, "peft_config")
        super().remove()


@ADAPTERS.register("lora/peft", method="lora", label="lora")
def insert_lora(
    model: nn.Module,
    config: LoraAdapterConfig | None = None,
    *,
    where: Where = None,
    freeze_backbone: bool = True,
    adapter_name: str = "mmrec",
    attach_as: str | None = None,
    **overrides: Any,
) -> LoraHandle:
    """Inject LoRA into ``model`` with ``peft.inject_adapter_in_model``.

    Args:
        model: T5 / BERT-like / mmrec backbone.
        config: :class:`LoraAdapterConfig` (defaults when ``None``).
        where: scopes whose Linear layers are adapted; ``None`` = every scope with targets.
        freeze_backbone: leave only the LoRA weights trainable (otherwise the backbone's ``requires_grad``
            flags are kept as they were).
        adapter_name: peft adapter name (parameter names contain it).
        attach_as: accepted for the common adapter signature and ignored: LoRA layers live inside the
            model's own modules, so its parameters and checkpoints include them already.
        **overrides: fields of :class:`LoraAdapterConfig`.

    Returns:
        a :class:`LoraHandle`.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1)
        >>> h = insert_lora(m, r=2)
        >>> h.parameter_names()[0]
        'encoder.blocks.0.qkv.lora_A.mmrec.weight'
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = config or LoraAdapterConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if _lora_layers(model, adapter_name):
        raise ValueError(f"LoRA adapter {adapter_name!r} is already in the model; pick another adapter_name.")
    targets = resolve_lora_targets(model, config, where)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    peft_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft annotates int; it only divides it by r
        lora_dropout=config.dropout,
        target_modules=list(targets),
        bias=cast(Literal["none", "all", "lora_only"], config.bias),  # checked by LoraAdapterConfig
        init_lora_weights=True,
    )
    inject_adapter_in_model(peft_config, model, adapter_name=adapter_name)
    handle = LoraHandle(model, adapter_name, targets)
    lora_names = set(handle.parameter_names())
    target_set = set(targets)
    for n, p in model.named_parameters():
        owner = n.rsplit(".", 1)[0].removesuffix(".base_layer")
        trainable_bias = n.endswith("bias") and (
            config.bias == "all" or (config.bias == "lora_only" and owner in target_set)
        )
        if n in lora_names or trainable_bias:
            p.requires_grad_(True)
        elif freeze_backbone:
            p.requires_grad_(False)
        else:
            base = n.replace(".base_layer.", ".")
            p.requires_grad_(flags.get(base, flags.get(n, p.requires_grad)))
    return handle
