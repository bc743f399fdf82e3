"""Linear heads on a frozen mmrec recommender: ``h -> W h + b`` on query and/or item vectors.

The heads start as the identity (``W = I``, ``b = 0``), so applying them changes nothing until trained.
They are forward hooks on ``model.encoder`` (the sequence hidden states, hence the query vectors) and on
``model.items`` (the item vectors, padding row 0 kept at zero).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmrec.adapters.handle import AdapterHandle, get_arg
from mmrec.adapters.insertion import Where, normalize_where
from mmrec.adapters.registry import ADAPTERS
from mmrec.nn.item_encoder import ItemEncoder
from mmrec.nn.sequence_encoder import CausalTransformer


class LinearHead(nn.Module):
    """``Linear(dim, dim)`` initialised to the identity.

    Example:
        >>> head = LinearHead(4)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(head(x), x)
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim) -> (..., dim)``; exactly ``x`` (finite inputs) while the weights are the identity."""
        return self.proj(x)


def require_sequential(model: nn.Module) -> tuple[ItemEncoder, CausalTransformer]:
    """Check that ``model`` looks like a ``SequentialRecommender`` and return its towers
    (``.items``, ``.encoder``)."""
    items, encoder = getattr(model, "items", None), getattr(model, "encoder", None)
    if not (isinstance(items, ItemEncoder) and isinstance(encoder, CausalTransformer)):
        raise TypeError(
            f"{type(model).__name__} is not an mmrec sequential recommender: transfer strategies need "
            "`.items` (ItemEncoder) and `.encoder` (CausalTransformer), e.g. mmrec.models.SASRec."
        )
    return items, encoder


@ADAPTERS.register("head/linear", method="head", label="linear-head")
def insert_linear_heads(
    model: nn.Module, *, where: Where = None, freeze_backbone: bool = True, attach_as: str | None = None
) -> AdapterHandle:
    """Add identity-initialised linear maps on the query (``"sequence"``) and item (``"item"``) vectors.

    Args:
        model: an mmrec ``SequentialRecommender`` (``.items`` and ``.encoder``).
        where: which towers get a head; ``None`` = both.
        freeze_backbone: freeze every model parameter first.
        attach_as: register the heads on the model under this name.

    Returns:
        an :class:`AdapterHandle` whose modules are ``{"sequence": LinearHead, "item": LinearHead}``.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 5, "num_users": 2}, dim=8, num_layers=1)
        >>> sorted(insert_linear_heads(m).modules.keys())
        ['item', 'sequence']
    """
    items_enc, encoder = require_sequential(model)
    scopes = normalize_where(where) or ("item", "sequence")
    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
    dim = items_enc.dim
    ref = next(model.parameters())
    modules = nn.ModuleDict()
    sites = []
    handle = AdapterHandle(model, "head/linear", modules)
    if "sequence" in scopes:
        head = LinearHead(dim).to(ref.device, ref.dtype)
        modules["sequence"] = head

        def seq_hook(mod: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> Any:
            if not handle.enabled:
                return None
            input_ids = get_arg(args, kwargs, 1, "input_ids")
            return head(output).masked_fill((input_ids == 0).unsqueeze(-1), 0.0)

        handle.add_hook(encoder.register_forward_hook(seq_hook, with_kwargs=True))
        sites.append("encoder")
    if "item" in scopes:
        item_head = LinearHead(dim).to(ref.device, ref.dtype)
        modules["item"] = item_head

        def item_hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> Any:
            if not handle.enabled:
                return None
            return torch.cat([output[:1], item_head(output[1:])], dim=0)

        handle.add_hook(items_enc.register_forward_hook(item_hook))
        sites.append("items")
    handle.sites = sites
    if attach_as is not None:
        handle.attach(attach_as)
    return handle
