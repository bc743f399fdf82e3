"""Item representations: ID embeddings fused with projected frozen content features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

Fusion = Literal["sum", "concat", "gated"]


class FeatureProjector(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: maps a frozen feature of width ``in_dim`` to ``dim``."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ItemEncoder(nn.Module):
    """All item vectors ``(N+1, dim)`` from ID embeddings and/or frozen features.

    Frozen feature tables live in non-persistent buffers (attached with :meth:`attach_features`), so
    checkpoints hold only trained weights; items whose feature is invalid get a zero contribution from
    that source.

    Args:
        num_items: catalogue size N (indices 1..N; 0 is padding and always maps to zeros).
        dim: output width.
        feature_dims: feature name -> input width (empty for an ID-only model).
        fusion: how sources combine: ``sum``, ``concat`` (then a linear layer) or ``gated`` (per-item
            softmax weights over the sources).
        use_id_embedding: include a learned ID embedding; False gives an ID-free model whose items are
            defined by content only (works for items never seen in training).
        dropout: dropout inside the feature projectors (the sequence encoder applies its own dropout to the
            gathered input embeddings, so the whole item table is not dropped out every step).

    Example:
        >>> enc = ItemEncoder(num_items=3, dim=8, feature_dims={"image": 5}, fusion="gated")
        >>> enc.attach_features({"image": (torch.randn(4, 5), torch.tensor([False, True, True, False]))})
        >>> enc().shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        feature_dims: Mapping[str, int] | None = None,
        fusion: Fusion = "sum",
        use_id_embedding: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        feature_dims = dict(feature_dims or {})
        if fusion not in ("sum", "concat", "gated"):
            raise ValueError(f"fusion must be 'sum', 'concat' or 'gated', got {fusion!r}.")
        if not use_id_embedding and not feature_dims:
            raise ValueError(
                "use_id_embedding=False needs at least one feature store (data.init_args.stores: {name: path})."
            )
        self.num_items = num_items
        self.dim = dim
        self.fusion = fusion
        self.feature_names = sorted(feature_dims)
        self.id_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0) if use_id_embedding else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=dim**-0.5)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        self.projectors = nn.ModuleDict(
            {n: FeatureProjector(feature_dims[n], dim, dropout) for n in self.feature_names}
        )
        n_sources = len(self.feature_names) + int(use_id_embedding)
        self.combine = nn.Linear(n_sources * dim, dim) if fusion == "concat" and n_sources > 1 else None
        self.gate = nn.Linear(n_sources * dim, n_sources) if fusion == "gated" and n_sources > 1 else None
        for n in self.feature_names:
            self.register_buffer(f"feat_{n}", torch.zeros(num_items + 1, feature_dims[n]), persistent=False)
            self.register_buffer(f"valid_{n}", torch.zeros(num_items + 1, dtype=torch.bool), persistent=False)
        self.features_attached = not self.feature_names

    def attach_features(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Load frozen feature tables.

        Args:
            tables: name -> ``(features (N+1, D), valid (N+1,))``, row 0 = padding.
        """
        for n in self.feature_names:
            if n not in tables:
                raise KeyError(f"feature {n!r} expected by the model is missing; got {sorted(tables)}.")
            feats, valid = tables[n]
            buf = getattr(self, f"feat_{n}")
            if tuple(feats.shape) != tuple(buf.shape):
                raise ValueError(
                    f"feature {n!r}: table shape {tuple(feats.shape)} != expected {tuple(buf.shape)} "
                    "(catalogue size + 1, feature dim); the store and dataset do not match the model."
                )
            buf.copy_(feats.to(buf.dtype))
            getattr(self, f"valid_{n}").copy_(valid.bool())
        self.features_attached = True

    def _sources(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        if self.id_embedding is not None:
            out.append(self.id_embedding.weight)
        for n in self.feature_names:
            feats = getattr(self, f"feat_{n}")
            valid = getattr(self, f"valid_{n}")
            out.append(self.projectors[n](feats) * valid.unsqueeze(-1).to(feats.dtype))
        return out

    def forward(self) -> torch.Tensor:
        """All item vectors.

        Returns:
            ``(N+1, dim)``; row 0 is zeros.
        """
        if not self.features_attached:
            raise RuntimeError(
                "item features are not attached: call attach_features(datamodule.item_feature_tables()) "
                "(the Trainer does this in setup)."
            )
        sources = self._sources()
        if len(sources) == 1:
            items = sources[0]
        elif self.fusion == "sum":
            items = torch.stack(sources).sum(0)
        elif self.fusion == "concat":
            assert self.combine is not None
            items = self.combine(torch.cat(sources, dim=-1))
        else:
            assert self.gate is not None
            logits = self.gate(torch.cat(sources, dim=-1))  # (N+1, S)
            offset = int(self.id_embedding is not None)
            for k, n in enumerate(self.feature_names):
                # an invalid feature gets no weight, so the item falls back on its other sources
                logits[:, offset + k] = logits[:, offset + k].masked_fill(~getattr(self, f"valid_{n}"), -1e4)
            weights = logits.softmax(-1)
            items = (torch.stack(sources, dim=1) * weights.unsqueeze(-1)).sum(1)
        pad = torch.zeros_like(items[:1])
        return torch.cat([pad, items[1:]], dim=0)
