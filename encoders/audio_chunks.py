"""Audio clips into model windows and chunk vectors back into one vector per clip: the window bounds, the
receptive field of conv front-ends (the shortest chunk worth encoding), the masked mean over valid frames
and the weighted pooling of chunk vectors per clip."""

from __future__ import annotations

from typing import Any

import torch


def split_chunks(num_samples: int, window: int, min_fraction: float = 0.1) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges of consecutive windows covering a clip.

    A trailing remainder shorter than ``min_fraction * window`` is dropped unless it is the whole clip.

    Example:
        >>> split_chunks(25, 10)
        [(0, 10), (10, 20), (20, 25)]
        >>> split_chunks(20_5, 100)  # 5 samples left over < 10% of a window: dropped
        [(0, 100), (100, 200)]
    """
    if num_samples <= 0:
        return []
    bounds = [(s, min(s + window, num_samples)) for s in range(0, num_samples, window)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_fraction * window:
        bounds.pop()
    return bounds


def receptive_field(config: Any) -> int:
    """Samples that one output frame of a conv waveform front-end sees (0 for spectrogram models).

    Args:
        config: a transformers config; ``conv_kernel`` / ``conv_stride`` describe the front-end.

    Example:
        >>> from types import SimpleNamespace
        >>> receptive_field(SimpleNamespace(conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2]))
        30
    """
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        return 0
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return int(field)


def masked_mean(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(c, T, D)`` and ``(c,)`` valid frame counts -> ``(c, D)`` mean over the valid frames.

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([2]))
        tensor([[2.]])
    """
    mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < valid[:, None]).to(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


def pool_chunks(
    chunk_vecs: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n_items: int
) -> torch.Tensor:
    """Weighted mean of chunk vectors per clip.

    Args:
        chunk_vecs: ``(C, D)`` chunk vectors of all clips.
        weights: ``(C,)`` chunk weights (durations, or ones for a plain mean).
        owner: ``(C,)`` clip index of each chunk.
        n_items: number of clips ``B``.

    Returns:
        ``(B, D)`` pooled vectors.

    Example:
        >>> pool_chunks(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([1.0, 3.0, 1.0]),
        ...             torch.tensor([0, 0, 1]), 2)
        tensor([[2.5000],
                [5.0000]])
    """
    summed = torch.zeros(n_items, chunk_vecs.shape[1], device=chunk_vecs.device).index_add_(
        0, owner, chunk_vecs * weights[:, None]
    )
    total = torch.zeros(n_items, device=chunk_vecs.device).index_add_(0, owner, weights)
    return summed / total.clamp_min(1e-12)[:, None]
