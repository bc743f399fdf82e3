"""Preprocessing of frozen feature tables, fitted on the catalogue: centring, PCA, whitening.

Sentence- and image-encoder embeddings of one catalogue are anisotropic: a few directions (the shared
"this is a beauty product title" component) carry most of the variance, so raw cosine / dot products between
items are dominated by what every item has in common. Whitening (BERT-whitening, Su et al. 2021; the
non-parametric counterpart of UniSRec's parametric whitening) removes the mean and rescales the principal
directions to unit variance, so the projector sees what tells items apart.

The statistics are fitted on the valid rows of the whole catalogue (unsupervised: item features only, no
interactions, so fitting on items withheld from training leaks no label) and kept in non-persistent buffers:
they are recomputed from the same features whenever the tables are attached.

Example:
    >>> pre = FeaturePreprocessor(4, mode="whiten")
    >>> x = torch.randn(100, 4) @ torch.tensor([[3.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, .5, 0], [0, 0, 0, 2]])
    >>> pre.fit(x)
    >>> cov = torch.cov(pre(x).T)
    >>> bool(torch.allclose(cov, torch.eye(4), atol=1e-3))
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Preprocess = Literal["none", "center", "pca", "whiten"]
PREPROCESS_MODES: tuple[str, ...] = ("none", "center", "pca", "whiten")


class FeaturePreprocessor(nn.Module):
    """``(x - mean) @ transform``, fitted with :meth:`fit` on a catalogue's feature table.

    Modes:

    - ``none``: identity (``out_dim = in_dim``);
    - ``center``: subtract the catalogue mean;
    - ``pca``: centre and project on the top ``out_dim`` principal directions (variance kept);
    - ``whiten``: PCA whitening: centre, project on the top ``out_dim`` directions and scale each to unit
      variance (the covariance of the fitted rows becomes the identity).

    Args:
        in_dim: feature width ``D``.
        mode: one of ``none``, ``center``, ``pca``, ``whiten``.
        out_dim: output width for ``pca`` / ``whiten`` (``None`` = ``in_dim``; at most ``in_dim``).
        eps: added to the eigenvalues before the inverse square root (directions with no variance).

    Shapes:
        ``forward: (..., D) -> (..., out_dim)``.
    """

    mean: torch.Tensor
    transform: torch.Tensor

    def __init__(self, in_dim: int, mode: Preprocess = "none", out_dim: int | None = None, eps: float = 1e-6):
        super().__init__()
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}.")
        if out_dim is not None and mode not in ("pca", "whiten"):
            raise ValueError(f"pca_dim / out_dim only applies to preprocess: pca or whiten, not {mode!r}.")
        out = in_dim if out_dim is None else int(out_dim)
        if not 1 <= out <= in_dim:
            raise ValueError(f"pca_dim must be between 1 and the feature width {in_dim}, got {out_dim}.")
        self.mode = mode
        self.in_dim = in_dim
        self.out_dim = out
        self.eps = eps
        self.register_buffer("mean", torch.zeros(in_dim), persistent=False)
        self.register_buffer("transform", torch.eye(in_dim)[:, :out], persistent=False)
        self.fitted = mode == "none"

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Fit the mean and the projection on rows ``x (M, D)`` (the catalogue's valid feature vectors)."""
        if self.mode == "none":
            return
        x = x.double()
        if x.shape[0] < 2:
            raise ValueError(f"cannot fit preprocess {self.mode!r} on {x.shape[0]} row(s); need at least 2 items.")
        mean = x.mean(0)
        self.mean.copy_(mean.to(self.mean.dtype))
        if self.mode == "center":
            self.fitted = True
            return
        cov = torch.cov((x - mean).T).reshape(self.in_dim, self.in_dim)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)[: self.out_dim]
        evals, evecs = evals[order].clamp_min(0.0), evecs[:, order]
        if self.mode == "whiten":
            evecs = evecs / torch.sqrt(evals + self.eps)
        self.transform.copy_(evecs.to(self.transform.dtype))
        self.fitted = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        if not self.fitted:
            raise RuntimeError(f"preprocess {self.mode!r} is not fitted: attach the feature tables first.")
        out = x - self.mean
        return out if self.mode == "center" else out @ self.transform
