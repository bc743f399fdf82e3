"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2021, parallel: He et al. 2022).

An adapter is ``down -> activation -> dropout -> up`` (times ``scaling``), added to a sub-layer's output
before the backbone's residual add:

- serial (``houlsby``, ``pfeiffer``): ``h + up(act(down(h)))`` where ``h`` is the sub-layer output;
- parallel: ``h + up(act(down(x)))`` where ``x`` is the sub-layer *input* (the adapter runs beside it).

Placement decides the sites inside each transformer block: ``houlsby`` after self-attention, after
cross-attention (decoders) and after the feed-forward; ``pfeiffer`` after the feed-forward only;
``parallel`` beside the same sites as ``houlsby`` (``sites=("ffn",)`` gives He et al.'s FFN-only variant).
The up-projection is zero-initialised by default, so a freshly inserted adapter is an exact identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mmrec.adapters.routing import check_tasks

Placement = Literal["houlsby", "pfeiffer", "parallel"]
SiteKind = Literal["attn", "cross_attn", "ffn"]
PLACEMENTS: tuple[str, ...] = ("houlsby", "pfeiffer", "parallel")
SITE_KINDS: tuple[str, ...] = ("attn", "cross_attn", "ffn")
DEFAULT_SITES: dict[str, tuple[str, ...]] = {
    "houlsby": ("attn", "cross_attn", "ffn"),
    "pfeiffer": ("ffn",),
    "parallel": ("attn", "cross_attn", "ffn"),
}
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``gelu``, ``silu``/``swish``, ``tanh``, ``identity``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


@dataclass
class BottleneckConfig:
    """Settings of bottleneck adapters.

    Args:
        reduction_factor: bottleneck width = ``dim / reduction_factor`` (rounded, at least 1); VIP5 uses 8.
        placement: ``houlsby`` (serial, after attention(s) and FFN), ``pfeiffer`` (serial, after FFN only)
            or ``parallel`` (beside each site, fed with the sub-layer input).
        activation: non-linearity between the projections (see :data:`ACTIVATIONS`).
        dropout: dropout on the bottleneck activations.
        init: ``zero`` (default: up-projection weights and bias 0, an exact identity at start) or ``bert``
            (both projections ``N(0, 0.02)``, biases 0: close to, but not exactly, identity).
        scaling: multiplier of the adapter output (``s`` of the parallel adapter).
        sites: which transformer sub-layers get adapters, a subset of ``("attn", "cross_attn", "ffn")``;
            ``None`` = the placement's default. Item-encoder sites (``where`` contains ``"item"``) always
            get one adapter each.
        tasks: task names for per-task adapters routed per sample (``handle.route``); ``None`` = one
            adapter shared by every task.

    Example:
        >>> BottleneckConfig(placement="pfeiffer").site_kinds
        ('ffn',)
        >>> BottleneckConfig(reduction_factor=8).bottleneck_dim(512)
        64
    """

    reduction_factor: float = 8
    placement: Placement = "houlsby"
    activation: str = "relu"
    dropout: float = 0.0
    init: Literal["zero", "bert"] = "zero"
    scaling: float = 1.0
    sites: Sequence[str] | None = None
    tasks: Sequence[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}.")
        if not (isinstance(self.reduction_factor, int | float) and self.reduction_factor > 0):
            raise ValueError(f"reduction_factor must be a positive number, got {self.reduction_factor!r}.")
        make_activation(self.activation)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.init not in ("zero", "bert"):
            raise ValueError(f"init must be 'zero' or 'bert', got {self.init!r}.")
        if not math.isfinite(self.scaling):
            raise ValueError(f"scaling must be a finite number, got {self.scaling}.")
        if self.sites is not None:
            if isinstance(self.sites, str):
                raise TypeError(f"sites must be a list, e.g. sites=[{self.sites!r}].")
            bad = [s for s in self.sites if s not in SITE_KINDS]
            if bad or not self.sites:
                raise ValueError(f"sites must be a non-empty subset of {SITE_KINDS}, got {list(self.sites)}.")
            self.sites = tuple(self.sites)
        self.tasks = check_tasks(self.tasks)

    @property
    def parallel(self) -> bool:
        """Whether the adapters read the sub-layer input (parallel) rather than its output (serial)."""
        return self.placement == "parallel"

    @property
    def site_kinds(self) -> tuple[str, ...]:
        """Transformer sub-layers that get an adapter."""
        return tuple(self.sites) if self.sites is not None else DEFAULT_SITES[self.placement]

    def bottleneck_dim(self, dim: int) -> int:
        """Bottleneck width for an adapter whose output has ``dim`` features."""
        return max(1, round(dim / self.reduction_factor))


class BottleneckAdapter(nn.Module):
    """``down -> act -> dropout -> up`` (times ``scaling``), used as a residual branch.

    Args:
        dim: output width (the adapted sub-layer's output width).
        config: :class:`BottleneckConfig` (defaults when ``None``).
        in_dim: input width when it differs from ``dim`` (a parallel adapter beside a projection).

    Shapes:
        :meth:`delta`: ``(..., in_dim) -> (..., dim)``; :meth:`forward`: ``h (..., dim)`` (and ``x``)
        ``-> (..., dim)``.

    Example:
        >>> a = BottleneckAdapter(16)
        >>> h = torch.randn(2, 5, 16)
        >>> torch.equal(a(h), h)  # zero-initialised up-projection: exact identity
        True
    """

    def __init__(
        self, dim: int, config: BottleneckConfig | None = None, *, in_dim: int | None = None
    ) -> None:
        super().__init__()
        config = config or BottleneckConfig()
        if dim < 1 or (in_dim is not None and in_dim < 1):
            raise ValueError(f"dim and in_dim must be positive, got dim={dim}, in_dim={in_dim}.")
        self.dim = dim
        self.in_dim = in_dim or dim
        self.scaling = float(config.scaling)
        hidden = config.bottleneck_dim(dim)
        self.down = nn.Linear(self.in_dim, hidden)
        self.act = make_activation(config.activation)
        self.drop = nn.Dropout(config.dropout)
        self.up = nn.Linear(hidden, dim)
        self.reset_parameters(config.init)

    def reset_parameters(self, init: str = "zero") -> None:
        """Re-initialise: ``zero`` keeps PyTorch's default ``down`` and zeroes ``up`` (identity);
        ``bert`` draws both from ``N(0, 0.02)``."""
        if init == "zero":
            self.down.reset_parameters()
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.normal_(self.down.weight, std=0.02)
            nn.init.normal_(self.up.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``scaling * up(drop(act(down(x))))``: ``(..., in_dim) -> (..., dim)``."""
        out = self.up(self.drop(self.act(self.down(x))))
        return out * self.scaling if self.scaling != 1.0 else out

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``h + delta(x)`` with ``x`` defaulting to ``h`` (serial)."""
        return h + self.delta(h if x is None else x)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, dim={self.dim}, bottleneck={self.down.out_features}, scaling={self.scaling}"
