"""Causal self-attention over item sequences (the SASRec user/sequence encoder).

The blocks are written out (rather than ``nn.TransformerEncoderLayer``) so that adapters have stable,
named insertion points that are honoured in every mode: ``blocks[i].attn_out`` (attention output
projection) and ``blocks[i].ffn_out`` (second feed-forward projection), both before the residual add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_padding_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (True = may attend) combining causality and padding.

    Every position may attend to itself, so no row is fully blocked (a fully blocked row makes softmax
    produce NaN for the left-padded prefix).

    Args:
        input_ids: ``(B, L)`` item indices, 0 = padding.

    Returns:
        ``(B, 1, L, L)`` bool mask, broadcast over heads.
    """
    length = input_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
    real_keys = (input_ids != 0)[:, None, :]  # (B, 1, L)
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)[None]
    return ((causal[None] & real_keys) | eye)[:, None]


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn_out(attn(LN(x)))`` then ``x + ffn_out(gelu(ffn_in(LN(x))))``.

    Args:
        dim: hidden size.
        num_heads: attention heads.
        dropout: dropout on attention weights and residual branches.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}).")
        self.num_heads = num_heads
        self.dropout = dropout
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        hidden = dim * 4 if dim < 256 else dim * 2
        self.ffn_in = nn.Linear(dim, hidden)
        self.ffn_out = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``x (B, L, D)``, ``mask (B, 1, L, L)`` (True = attend) -> ``(B, L, D)``.

        ``prefix_kv`` (prefix tuning, see ``mmrec.adapters.prompt``): optional ``(keys, values)``, each
        ``(B, P, D)``, prepended to this block's keys and values; every query may attend to them.
        ``last_only``: compute the output of the last position only, ``(B, 1, D)`` (keys and values still
        come from every position): what ranking needs from the last block, at ~1/L of its attention and
        feed-forward cost.
        """
        b, length, d = x.shape
        q, k, v = (
            self.qkv(self.attn_norm(x)).view(b, length, 3, self.num_heads, d // self.num_heads).unbind(2)
        )
        if last_only:
            x, q, mask = x[:, -1:], q[:, -1:], mask[:, :, -1:]
            length = 1
        if prefix_kv is not None:
            pk, pv = prefix_kv
            p = pk.shape[1]
            k = torch.cat([pk.reshape(b, p, self.num_heads, d // self.num_heads), k], dim=1)
            v = torch.cat([pv.reshape(b, p, self.num_heads, d // self.num_heads), v], dim=1)
            mask = torch.cat([mask.new_ones((*mask.shape[:-1], p)), mask], dim=-1)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.attn_out(attn.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ffn_out(self.drop(F.gelu(self.ffn_in(self.ffn_norm(x))))))


class PositionEmbedding(nn.Embedding):
    """Learned position table drawn from ``N(0, std**2)``, also on ``reset_parameters`` (re-initialisation).

    Example:
        >>> std = PositionEmbedding(1000, 64, std=0.125).weight.std().item()
        >>> abs(std - 0.125) < 0.005
        True
    """

    def __init__(self, num_positions: int, dim: int, std: float) -> None:
        self.std = float(std)  # read by reset_parameters, which nn.Embedding's constructor calls
        super().__init__(num_positions, dim)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.std)


class CausalTransformer(nn.Module):
    """Pre-norm transformer encoder with learned positions and a causal, padding-aware mask.

    Positions count from the end of the (left-padded) sequence, so the most recent item always has the same
    position embedding. The position table starts at the scale of the item vectors it is added to
    (``position_std``): with ID embeddings of unit norm (``ItemEncoder``: std ``dim ** -0.5``) and the
    ``nn.Embedding`` default (std 1, norm ``sqrt(dim)``), the input was 8x more position than item at
    ``dim=64``; the item signal reached the attention as a small perturbation and SASRec sat at popularity
    level for hundreds of steps (MovieLens-100k: never left it within 40 epochs).

    Args:
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads (``dim`` must be divisible by it).
        max_len: longest sequence (positions).
        dropout: dropout on embeddings, attention and feed-forward.
        position_std: std of the initial position embeddings; ``None`` = ``dim ** -0.5`` (unit-norm rows,
            the scale of the ID embeddings). Use ``1.0`` when the item inputs have norm ``sqrt(dim)``.

    Example:
        >>> enc = CausalTransformer(dim=16, num_layers=1, num_heads=2, max_len=5)
        >>> ids = torch.tensor([[0, 0, 3, 4, 5]])
        >>> enc(torch.randn(1, 5, 16), ids).shape
        torch.Size([1, 5, 16])
    """

    def __init__(
        self,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        position_std: float | None = None,
    ) -> None:
        super().__init__()
        if position_std is not None and position_std <= 0:
            raise ValueError(f"position_std must be > 0 (None = dim ** -0.5), got {position_std}.")
        self.max_len = max_len
        self.position_std = float(dim**-0.5 if position_std is None else position_std)
        self.positions = PositionEmbedding(max_len, dim, std=self.position_std)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, item_embeddings: torch.Tensor, input_ids: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """Encode a left-padded sequence.

        Args:
            item_embeddings: ``(B, L, D)`` embeddings of ``input_ids``.
            input_ids: ``(B, L)`` item indices (0 = padding), used for the mask.
            last_only: return the last position only, ``(B, 1, D)``, computing only it in the last block
                (ranking needs nothing else; the values equal ``forward(...)[:, -1:]``).

        Returns:
            ``(B, L, D)`` hidden states (``(B, 1, D)`` with ``last_only``); position ``t`` summarises items
            ``<= t``; padded positions are 0.
        """
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"sequence length {length} exceeds max_len {self.max_len}; raise the datamodule's max_len."
            )
        pos = torch.arange(self.max_len - length, self.max_len, device=input_ids.device)
        pad = (input_ids == 0).unsqueeze(-1)
        x = self.dropout(item_embeddings + self.positions(pos)[None]).masked_fill(pad, 0.0)
        mask = causal_padding_mask(input_ids)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only=True) if last_only and i == last else block(x, mask)
        if last_only:
            x, pad = x[:, -1:], pad[:, -1:]
        return self.norm(x).masked_fill(pad, 0.0)
