"""Training-memory accounting that is honest on CPU and comparable across transfer strategies.

On CUDA the benchmark reports ``torch.cuda.max_memory_allocated``. On CPU there is no allocator peak to
read, so :func:`training_memory` adds up what one training step must hold:

- ``params``: every parameter (frozen or not) and ``buffers`` (e.g. the frozen feature tables);
- ``grads``: one gradient per trainable parameter;
- ``optimizer``: AdamW's two moment tensors per trainable parameter;
- ``activations``: the tensors autograd saves for backward during the step's forward pass, measured with
  :func:`torch.autograd.graph.saved_tensors_hooks` (distinct storages, parameters and buffers excluded).

A frozen backbone run under ``torch.no_grad`` (IISAN's side network) saves nothing, which is exactly the
saving such methods claim.

Example:
    >>> from torch import nn
    >>> lin = nn.Linear(4, 2)
    >>> saved_activation_bytes(lin, lambda: lin(torch.randn(3, 4)).sum()) == 3 * 4 * 4
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

MIB = 1024.0 * 1024.0


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        s = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse / meta tensors
        return None
    return s.data_ptr(), s.nbytes()


def saved_activation_bytes(model: nn.Module, forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs, excluding the
    model's own parameters and buffers (counted separately). The graph is dropped without a backward.

    Args:
        model: the module whose parameters / buffers are not counted as activations.
        forward: computes the loss (e.g. ``lambda: model.training_loss(batch)``).

    Returns:
        the byte count.
    """
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key[0] != 0:
            saved[key[0]] = max(saved.get(key[0], 0), key[1])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    del loss
    own = {k[0] for t in [*model.parameters(), *model.buffers()] if (k := _storage_key(t)) is not None}
    return int(sum(n for ptr, n in saved.items() if ptr not in own))


def static_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of parameters (all / trainable) and buffers of ``model`` (shared tensors once)."""
    seen: set[int] = set()
    params = trainable = buffers = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel() * p.element_size()
        params += n
        trainable += n if p.requires_grad else 0
    for b in model.buffers():
        if id(b) in seen or b is None:
            continue
        seen.add(id(b))
        buffers += b.numel() * b.element_size()
    return {"params": params, "trainable": trainable, "buffers": buffers}


def training_memory(
    model: nn.Module, batch: Mapping[str, torch.Tensor], loss_fn: Callable[[Mapping[str, Any]], torch.Tensor]
) -> dict[str, float]:
    """Memory one AdamW training step needs on ``batch`` (see the module docstring), in MiB.

    Args:
        model: the model, in the state it will train in (strategy applied).
        batch: a training batch on the model's device.
        loss_fn: ``batch -> scalar loss`` (``model.training_loss``).

    Returns:
        ``{"params", "buffers", "grads", "optimizer", "activations", "train_state", "total"}`` in MiB, where
        ``train_state = grads + optimizer + activations`` (what differs between strategies) and
        ``total = params + buffers + train_state``.
    """
    was_training = model.training
    model.train()
    try:
        acts = saved_activation_bytes(model, lambda: loss_fn(batch))
    finally:
        model.train(was_training)
    st = static_bytes(model)
    grads = st["trainable"]
    optim = 2 * st["trainable"]
    out = {
        "params": st["params"] / MIB,
        "buffers": st["buffers"] / MIB,
        "grads": grads / MIB,
        "optimizer": optim / MIB,
        "activations": acts / MIB,
    }
    out["train_state"] = out["grads"] + out["optimizer"] + out["activations"]
    out["total"] = out["params"] + out["buffers"] + out["train_state"]
    return out
