"""Visual projector: a frozen image embedding (CLIP) -> ``k`` soft tokens in the language model's space.

Defaults follow VIP5's official ``VisualEmbedding`` (``src/modeling_vip5.py``): a two-layer MLP
``Linear(in_dim, k*d/2) -> Tanh -> Linear(k*d/2, k*d)`` (ClipCap's ``MLP``, whose default activation is
``nn.Tanh``), then ``T5LayerNorm`` (an RMS norm, no bias) over the ``k*d`` concatenation, reshaped into
``k`` tokens of width ``d``. ``norm_scope="token"`` / ``norm="layer"`` / ``activation="relu"`` give the
common per-token LayerNorm variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmrec.adapters.bottleneck import make_activation


@dataclass
class VisualProjectorConfig:
    """Settings of :class:`VisualProjector`.

    Args:
        in_dim: width of the frozen visual feature (512 for CLIP ViT-B/32).
        k_tokens: soft tokens per image (VIP5's ``image_feature_size_ratio``, default 2).
        hidden: MLP hidden width; ``None`` = ``k_tokens * d_model // 2`` (VIP5).
        activation: MLP non-linearity (VIP5: ``tanh``).
        norm: ``rms`` (T5LayerNorm, VIP5), ``layer`` (LayerNorm) or ``none``.
        norm_scope: ``joint`` normalises the ``k*d`` concatenation (VIP5), ``token`` each token's ``d``.
        eps: norm epsilon (T5's 1e-6).
        dropout: dropout after the activation.

    Example:
        >>> VisualProjectorConfig(in_dim=512).k_tokens
        2
    """

    in_dim: int
    k_tokens: int = 2
    hidden: int | None = None
    activation: str = "tanh"
    norm: Literal["rms", "layer", "none"] = "rms"
    norm_scope: Literal["joint", "token"] = "joint"
    eps: float = 1e-6
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.in_dim, int) and self.in_dim >= 1):
            raise ValueError(
                f"in_dim must be a positive integer (the visual feature width), got {self.in_dim!r}."
            )
        if not (isinstance(self.k_tokens, int) and self.k_tokens >= 1):
            raise ValueError(f"k_tokens must be a positive integer, got {self.k_tokens!r}.")
        if self.hidden is not None and not (isinstance(self.hidden, int) and self.hidden >= 1):
            raise ValueError(f"hidden must be a positive integer or None, got {self.hidden!r}.")
        make_activation(self.activation)
        if self.norm not in ("rms", "layer", "none"):
            raise ValueError(f"norm must be 'rms', 'layer' or 'none', got {self.norm!r}.")
        if self.norm_scope not in ("joint", "token"):
            raise ValueError(f"norm_scope must be 'joint' or 'token', got {self.norm_scope!r}.")
        if not (self.eps > 0 and 0.0 <= self.dropout < 1.0):
            raise ValueError(
                f"eps must be > 0 and dropout in [0, 1), got eps={self.eps}, dropout={self.dropout}."
            )


class VisualProjector(nn.Module):
    """Maps visual features to ``k`` soft tokens of width ``d_model``.

    Args:
        d_model: the language model's hidden size.
        config: :class:`VisualProjectorConfig`.

    Shapes:
        ``(..., in_dim) -> (..., k_tokens, d_model)``; e.g. ``(B, n_items, 512) -> (B, n_items, 2, 512)``.
        Flatten with ``out.flatten(-3, -2)`` to get VIP5's ``(B, n_items * k, d_model)`` token sequence.

    Example:
        >>> proj = VisualProjector(32, VisualProjectorConfig(in_dim=12, k_tokens=3))
        >>> proj(torch.randn(2, 5, 12)).shape
        torch.Size([2, 5, 3, 32])
    """

    def __init__(self, d_model: int, config: VisualProjectorConfig) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be positive, got {d_model}.")
        self.config = config
        self.d_model = d_model
        self.k_tokens = config.k_tokens
        out = config.k_tokens * d_model
        hidden = config.hidden or max(1, out // 2)
        self.mlp = nn.Sequential(
            nn.Linear(config.in_dim, hidden),
            make_activation(config.activation),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, out),
        )
        width = out if config.norm_scope == "joint" else d_model
        self.norm: nn.Module
        if config.norm == "rms":
            self.norm = nn.RMSNorm(width, eps=config.eps)
        elif config.norm == "layer":
            self.norm = nn.LayerNorm(width, eps=config.eps)
        else:
            self.norm = nn.Identity()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` -> ``(..., k_tokens, d_model)``."""
        if feats.shape[-1] != self.config.in_dim:
            raise ValueError(
                f"visual features have width {feats.shape[-1]}, the projector expects in_dim="
                f"{self.config.in_dim}; set VisualProjectorConfig(in_dim=...) to the feature store's dim."
            )
        x = self.mlp(feats)
        if self.config.norm_scope == "joint":
            return self.norm(x).unflatten(-1, (self.k_tokens, self.d_model))
        return self.norm(x.unflatten(-1, (self.k_tokens, self.d_model)))
