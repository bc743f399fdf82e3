"""Bidirectional (non-causal) self-attention over item sequences: the BERT4Rec encoder.

The same pre-norm :class:`~mmrec.nn.sequence_encoder.TransformerBlock` as the causal encoder (so adapters
find the same insertion points), with a mask in which every real position sees every other real position.
"""

from __future__ import annotations

import torch
from torch import nn

from mmrec.nn.sequence_encoder import TransformerBlock


def bidirectional_padding_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (True = may attend): every position attends to every real position.

    Padding positions also attend to themselves, so no row is fully blocked (softmax would give NaN).

    Args:
        input_ids: ``(B, L)`` item indices, 0 = padding.

    Returns:
        ``(B, 1, L, L)`` bool mask, broadcast over heads.

    Example:
        >>> bidirectional_padding_mask(torch.tensor([[0, 5, 6]]))[0, 0].int().tolist()
        [[1, 1, 1], [0, 1, 1], [0, 1, 1]]
    """
    length = input_ids.shape[1]
    real_keys = (input_ids != 0)[:, None, :].expand(-1, length, -1)  # (B, L, L)
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)[None]
    return (real_keys | eye)[:, None]


class BidirectionalTransformer(nn.Module):
    """Pre-norm transformer encoder with learned positions and a padding-only (non-causal) mask.

    Positions are counted from the end of the sequence (the last column has the last position), so the
    same left-padded history gets the same encoding whatever the padding width.

    Args:
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads (``dim`` must be divisible by it).
        max_len: longest sequence (positions).
        dropout: dropout on embeddings, attention and feed-forward.

    Example:
        >>> enc = BidirectionalTransformer(dim=16, num_layers=1, num_heads=2, max_len=5)
        >>> enc(torch.randn(1, 4, 16), torch.tensor([[0, 3, 4, 5]])).shape
        torch.Size([1, 4, 16])
    """

    def __init__(
        self, dim: int = 64, num_layers: int = 2, num_heads: int = 2, max_len: int = 50, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, item_embeddings: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Encode a left-padded sequence.

        Args:
            item_embeddings: ``(B, L, D)`` embeddings of ``input_ids``.
            input_ids: ``(B, L)`` token indices (0 = padding), used for the mask.

        Returns:
            ``(B, L, D)`` hidden states; every real position sees the whole sequence; padding rows are 0.
        """
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"sequence length {length} exceeds the encoder's {self.max_len} positions; raise max_len."
            )
        pos = torch.arange(self.max_len - length, self.max_len, device=input_ids.device)
        pad = (input_ids == 0).unsqueeze(-1)
        x = self.dropout(item_embeddings + self.positions(pos)[None]).masked_fill(pad, 0.0)
        mask = bidirectional_padding_mask(input_ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x).masked_fill(pad, 0.0)
