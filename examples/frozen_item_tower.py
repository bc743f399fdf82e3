"""Use an mmrec encoder as a frozen item tower inside your own PyTorch model.

A two-tower recommender written in plain PyTorch: the item tower is a frozen mmrec image encoder
(``create_encoder``) followed by a small trainable projection; the user tower is an ID embedding. Only the
projection and the user embeddings train: the encoder's weights never change and it stays in eval mode.

Note ``encode(...)`` runs under ``torch.inference_mode()``; its output is an inference tensor, so it is
cloned before trainable layers use it (autograd cannot save inference tensors for backward).

Run it (synthetic images and clicks, a few seconds on CPU)::

    python examples/frozen_item_tower.py --encoder timm/tiny --weights random --steps 30
    python examples/frozen_item_tower.py --encoder classic/color-histogram   # no weights at all

Any registered image encoder works (``mmrec encoders list``): with real weights, e.g.
``--encoder open_clip/ViT-B-32 --weights laion2b_s34b_b79k``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmrec.encoders import FrozenEncoder, create_encoder


class TwoTower(nn.Module):
    """Plain two-tower model: ``score(u, i) = user_emb[u] . proj(encoder(image_i))``.

    Args:
        encoder: a frozen mmrec encoder (its parameters never require grad).
        num_users: user-embedding rows.
        dim: shared embedding size.
    """

    def __init__(self, encoder: FrozenEncoder, num_users: int, dim: int = 32) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Sequential(nn.Linear(encoder.output_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.users = nn.Embedding(num_users, dim)

    def item_vectors(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` preprocessed item inputs -> ``(B, dim)``."""
        feats = self.encoder.encode(pixels).clone()  # frozen features, then trainable layers
        return self.proj(feats)

    def forward(self, users: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Scores of every user of the batch against every item of the batch: ``(B_u, B_i)``."""
        return self.users(users) @ self.item_vectors(pixels).T


def synthetic_catalogue(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` small solid-colour images (items)."""
    rng = np.random.default_rng(seed)
    return [Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(n)]


def train(
    encoder_name: str = "timm/tiny", weights: str | None = "random", steps: int = 30, seed: int = 0
) -> dict[str, float]:
    """Train the two-tower model on synthetic clicks; returns the first and last loss.

    Example:
        >>> out = train("classic/color-histogram", weights=None, steps=5)  # doctest: +SKIP
    """
    torch.manual_seed(seed)
    kwargs = {"weights": weights} if weights is not None else {}
    encoder = create_encoder(encoder_name, **kwargs)
    items = synthetic_catalogue(24, seed)
    pixels = encoder.collate([encoder.preprocess(im) for im in items])  # preprocess once, encode in the model
    num_users = 8
    clicks = torch.tensor(np.random.default_rng(seed).integers(0, len(items), num_users))  # each user's item
    model = TwoTower(encoder, num_users)
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(torch.arange(num_users), pixels)  # (users, items): softmax over the catalogue
        loss = nn.functional.cross_entropy(logits, clicks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    unchanged = all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in frozen.items())
    return {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "encoder_unchanged": float(unchanged),
        "encoder_training_mode": float(model.encoder.training),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="timm/tiny")
    p.add_argument("--weights", default="random", help="encoder weights ('none' for weight-free encoders)")
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args(argv)
    out = train(a.encoder, None if a.weights == "none" else a.weights, a.steps)
    print(
        f"loss {out['first_loss']:.3f} -> {out['last_loss']:.3f}; encoder unchanged: {bool(out['encoder_unchanged'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
