"""UniSRec's mixture-of-experts adaptor over frozen text features (Hou et al., KDD 2022).

Each expert is a *parametric whitening* layer, ``(x - b_k) W_k`` (a learned centre and a linear map, no
non-linearity), and a softmax gate over the experts (noisy during training, as in UniSRec) mixes them per
item. The experts let differently distributed embedding regions (domains, or title styles within one
catalogue) be re-centred separately, which a single LayerNorm + MLP cannot do.

Example:
    >>> moe = MoEAdaptor(in_dim=12, dim=8, num_experts=4)
    >>> moe(torch.randn(5, 12)).shape
    torch.Size([5, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ParametricWhitening(nn.Module):
    """``dropout(x - b) @ W``: a learned centre ``b (D,)`` and projection ``W (D, dim)`` (UniSRec's PWLayer)."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(in_dim))
        self.linear = nn.Linear(in_dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.linear.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x - self.bias))


class MoEAdaptor(nn.Module):
    """Mixture of :class:`ParametricWhitening` experts with a (noisy) softmax gate.

    Args:
        in_dim: frozen feature width ``D``.
        dim: output width.
        num_experts: experts (UniSRec: 8).
        dropout: dropout on the expert inputs.
        noisy_gating: add Gaussian noise (learned scale) to the gate logits in training.

    Shapes:
        ``forward: (..., D) -> (..., dim)``; :meth:`gate_weights` ``(..., num_experts)`` sum to 1.
    """

    def __init__(
        self, in_dim: int, dim: int, num_experts: int = 8, dropout: float = 0.1, noisy_gating: bool = True
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}.")
        self.experts = nn.ModuleList(ParametricWhitening(in_dim, dim, dropout) for _ in range(num_experts))
        self.w_gate = nn.Parameter(torch.zeros(in_dim, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_dim, num_experts))
        self.noisy_gating = noisy_gating

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., num_experts)`` mixing weights (softmax; deterministic in eval)."""
        logits = x @ self.w_gate
        if self.noisy_gating and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.w_noise)
        return logits.softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gate_weights(x)  # (..., E)
        experts = torch.stack([e(x) for e in self.experts], dim=-2)  # (..., E, dim)
        return (gates.unsqueeze(-1) * experts).sum(-2)
