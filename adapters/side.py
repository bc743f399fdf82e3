"""IISAN-style side network (Fu et al. 2024) for mmrec's ``SequentialRecommender``.

The pre-trained backbone is frozen and *never differentiated*: its outputs are computed without autograd
and a small trainable side network builds the final representations from them.

- Item tower: the frozen item vectors (``ItemEncoder`` output, ``(N+1, d)``) are computed once, in eval
  mode, and cached (``handle.refresh()`` recomputes them, e.g. after ``attach_item_features``); the side
  item adapter gives ``v + adapter(v)`` (row 0 stays zero).
- Sequence tower: per batch, the frozen ``CausalTransformer`` runs under ``torch.no_grad()`` in eval mode
  on the cached item vectors, and each block's hidden states ``h_0`` (block input) .. ``h_L`` are kept.
  The side network runs beside it: ``s_0 = h_0 + (side item vectors - frozen item vectors)`` at the
  sequence positions, then for every layer ``f_l = h_l + g_l (s_{l-1} - h_l)`` (a learnable gate ``g_l``
  fusing the side stream with the backbone's layer output) and ``s_l = f_l + adapter_l(f_l)`` (a
  low-dimensional bottleneck adapter); the output is ``LayerNorm(s_L)`` with the LayerNorm initialised
  from the backbone's final norm.

With ``g_l = 0`` and zero-initialised adapters at start, the side model's outputs equal the frozen
backbone's (eval-mode) outputs, and training moves away from them. Backbone gradients stay ``None``, and
the backward pass touches only the side network (less time and activation memory than fine-tuning).

The side network replaces ``model.items.forward`` and ``model.encoder.forward`` on the instances (restored
by ``handle.remove()``), so ``item_vectors()``, ``query_vectors()`` and ``training_loss()`` keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmrec.adapters.bottleneck import BottleneckAdapter, BottleneckConfig, make_activation
from mmrec.adapters.handle import AdapterHandle
from mmrec.adapters.head import require_sequential
from mmrec.adapters.insertion import Where, normalize_where
from mmrec.adapters.registry import ADAPTERS


@dataclass
class SideConfig:
    """Settings of the side network.

    Args:
        reduction_factor: side adapters' bottleneck width = ``d / reduction_factor``.
        activation: adapter non-linearity.
        dropout: adapter dropout.
        gate_init: initial value of each layer's fusion gate ``g_l`` (0 = start from the backbone).

    Example:
        >>> SideConfig(reduction_factor=4).reduction_factor
        4
    """

    reduction_factor: float = 8
    activation: str = "gelu"
    dropout: float = 0.0
    gate_init: float = 0.0

    def __post_init__(self) -> None:
        if not self.reduction_factor > 0:
            raise ValueError(f"reduction_factor must be > 0, got {self.reduction_factor}.")
        make_activation(self.activation)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    def adapter_config(self) -> BottleneckConfig:
        """The :class:`BottleneckConfig` of the side adapters."""
        return BottleneckConfig(
            reduction_factor=self.reduction_factor, activation=self.activation, dropout=self.dropout
        )


class SideItemAdapter(nn.Module):
    """``v + adapter(v)`` on cached frozen item vectors ``(N+1, d)``; row 0 (padding) stays zero."""

    def __init__(self, dim: int, config: SideConfig) -> None:
        super().__init__()
        self.adapter = BottleneckAdapter(dim, config.adapter_config())

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``(N+1, d) -> (N+1, d)``."""
        return torch.cat([items[:1], self.adapter(items[1:])], dim=0)


class SideSequenceNetwork(nn.Module):
    """Gated fusion of the frozen backbone's layer outputs through low-dimensional adapters.

    Args:
        dim: hidden size.
        num_layers: backbone blocks.
        config: :class:`SideConfig`.
        final_norm: the backbone's final ``LayerNorm`` (copied as the side output norm).

    Shapes:
        ``s0 (B, L, d)``, ``states``: ``num_layers`` tensors ``(B, L, d)``, ``pad (B, L, 1)`` -> ``(B, L, d)``.
    """

    def __init__(self, dim: int, num_layers: int, config: SideConfig, final_norm: nn.LayerNorm) -> None:
        super().__init__()
        self.gates = nn.Parameter(torch.full((num_layers,), float(config.gate_init)))
        self.adapters = nn.ModuleList(
            BottleneckAdapter(dim, config.adapter_config()) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=final_norm.eps, elementwise_affine=final_norm.elementwise_affine)
        self.norm.load_state_dict(final_norm.state_dict())

    def forward(self, s0: torch.Tensor, states: list[torch.Tensor], pad: torch.Tensor) -> torch.Tensor:
        if len(states) != len(self.adapters):
            raise ValueError(f"expected {len(self.adapters)} backbone layer outputs, got {len(states)}.")
        s = s0
        for gate, adapter, h in zip(self.gates, self.adapters, states):
            fused = h + gate * (s - h)
            s = adapter(fused)
        return self.norm(s).masked_fill(pad, 0.0)


class SideNetwork(nn.Module):
    """Container of the side modules and the frozen item cache (a non-persistent buffer)."""

    item_cache: torch.Tensor | None
    # set by insert_side_network for the towers it adapts (absent otherwise)
    items: SideItemAdapter
    sequence: SideSequenceNetwork

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("item_cache", None, persistent=False)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


class SideHandle(AdapterHandle):
    """Handle of an IISAN-style side network; :meth:`refresh` drops the frozen item cache."""

    def __init__(self, model: nn.Module, side: SideNetwork, sites: list[str]) -> None:
        super().__init__(model, "side/iisan", side, sites)
        self.side = side

    def refresh(self) -> None:
        """Recompute the frozen item vectors at the next call (after changing features or weights)."""
        self.side.item_cache = None


def _override_forward(module: nn.Module, fn: Callable[..., Any]) -> Callable[[], None]:
    had = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = fn

    def restore() -> None:
        if had:
            module.__dict__["forward"] = previous
        else:
            module.__dict__.pop("forward", None)

    return restore


@ADAPTERS.register("side/iisan", method="side", label="side", trains_backbone_norms=False)
def insert_side_network(
    model: nn.Module,
    config: SideConfig | None = None,
    *,
    where: Where = None,
    attach_as: str | None = None,
    **overrides: Any,
) -> SideHandle:
    """Freeze ``model`` and add an IISAN-style side network (see the module docstring).

    Args:
        model: an mmrec ``SequentialRecommender`` (``.items`` ItemEncoder, ``.encoder`` CausalTransformer).
        config: :class:`SideConfig`.
        where: towers with a trainable side part: ``"item"`` (item adapter), ``"sequence"`` (side sequence
            network); ``None`` = both. A tower left out uses the frozen backbone's (cached) output.
        attach_as: register the side network on ``model`` under this name.
        **overrides: fields of :class:`SideConfig`.

    Returns:
        a :class:`SideHandle`.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=2)
        >>> h = insert_side_network(m, attach_as="side")
        >>> sorted(h.modules._modules)
        ['items', 'sequence']
    """
    items_enc, encoder = require_sequential(model)
    config = config or SideConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    scopes = normalize_where(where) or ("item", "sequence")
    for p in model.parameters():
        p.requires_grad_(False)
    dim = items_enc.dim
    ref = next(model.parameters())
    side = SideNetwork()
    if "item" in scopes:
        side.items = SideItemAdapter(dim, config)
    if "sequence" in scopes:
        side.sequence = SideSequenceNetwork(dim, len(encoder.blocks), config, encoder.norm)
    side.to(ref.device, ref.dtype)
    handle = SideHandle(model, side, ["items", "encoder"])
    original_items = items_enc.forward
    original_encoder = encoder.forward

    def frozen_items() -> torch.Tensor:
        cache = side.item_cache
        if cache is None or cache.device != ref.device:
            with torch.no_grad(), _eval_mode(items_enc):
                cache = original_items()
            side.item_cache = cache
        return cache

    def items_forward() -> torch.Tensor:
        if not handle.enabled:
            return original_items()
        cached = frozen_items()
        return side.items(cached) if "items" in side._modules else cached

    def encoder_forward(item_embeddings: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        if not handle.enabled:
            return original_encoder(item_embeddings, input_ids)
        frozen_in = frozen_items()[input_ids]
        states: list[torch.Tensor] = []
        hooks = [encoder.blocks[0].register_forward_pre_hook(lambda m, a: states.append(a[0]))]
        hooks += [b.register_forward_hook(lambda m, a, o: states.append(o)) for b in encoder.blocks]
        try:
            with torch.no_grad(), _eval_mode(encoder):
                frozen_out = original_encoder(frozen_in, input_ids)
        finally:
            for h in hooks:
                h.remove()
        if "sequence" not in side._modules:
            return frozen_out
        pad = (input_ids == 0).unsqueeze(-1)
        s0 = states[0] + (item_embeddings - frozen_in).masked_fill(pad, 0.0)
        return side.sequence(s0, states[1:], pad)

    handle.add_cleanup(_override_forward(items_enc, items_forward))
    handle.add_cleanup(_override_forward(encoder, encoder_forward))
    handle.add_cleanup(handle.refresh)
    if attach_as is not None:
        handle.attach(attach_as)
    return handle
