"""Choosing what trains: freeze everything but a set of parameters, find LayerNorms, report the share.

Example:
    >>> from mmrec.models import SASRec
    >>> m = SASRec(catalog={"num_items": 5, "num_users": 2}, dim=8, num_layers=1)
    >>> names = freeze_all_but(m, layer_norm_params(m))
    >>> names[0]
    'encoder.blocks.0.attn_norm.weight'
    >>> trainable_report(m)["trainable"]
    48
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

Selector = Callable[[str, nn.Parameter], bool] | str | Iterable[str] | None


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or name.endswith(("LayerNorm", "RMSNorm"))


def layer_norm_params(model: nn.Module, prefix: str | None = None) -> list[str]:
    """Names of the parameters of LayerNorm-like modules (``nn.LayerNorm``, ``nn.RMSNorm``,
    ``T5LayerNorm``, any ``*LayerNorm`` / ``*RMSNorm`` class), optionally under a module path ``prefix``.

    Args:
        model: any module.
        prefix: keep only names under this dotted module path (``"encoder"``).

    Returns:
        parameter names as in ``model.named_parameters()``.
    """
    out: list[str] = []
    for mod_name, module in model.named_modules():
        if not _is_norm(module):
            continue
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if prefix is None or full.startswith(prefix + "."):
                out.append(full)
    known = {n for n, _ in model.named_parameters()}
    return [n for n in out if n in known]


def _selector(trainable: Selector) -> Callable[[str, nn.Parameter], bool]:
    if trainable is None:
        return lambda name, p: False
    if callable(trainable):
        return trainable
    patterns = [trainable] if isinstance(trainable, str) else list(trainable)
    exact = set(patterns)
    return lambda name, p: name in exact or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def freeze_all_but(model: nn.Module, trainable: Selector = None) -> list[str]:
    """Set ``requires_grad`` so that exactly the selected parameters train.

    Args:
        model: any module.
        trainable: a predicate ``(name, param) -> bool``, a list of names / shell patterns
            (``"*.lora_*"``, ``"adapters.*"``), one pattern, or ``None`` (freeze everything).

    Returns:
        the names left trainable.
    """
    keep = _selector(trainable)
    names = []
    for name, p in model.named_parameters():
        flag = bool(keep(name, p))
        p.requires_grad_(flag)
        if flag:
            names.append(name)
    return names


def set_trainable(model: nn.Module, names: Iterable[str], trainable: bool = True) -> None:
    """Switch ``requires_grad`` of the named parameters (unknown names raise a ``KeyError``)."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"no parameters named {missing[:5]} in {type(model).__name__}.")
    for n in names:
        params[n].requires_grad_(trainable)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


class TrainableReport(dict):
    """``{"trainable": int, "total": int, "percent": float, "names": list[str]}``; ``str()`` is one line."""

    def __str__(self) -> str:
        return (
            f"trainable {self['trainable']:,} / {self['total']:,} parameters "
            f"({self['percent']:.3f}%) in {len(self['names'])} tensors"
        )

    def summary(self) -> str:
        """The one-line summary."""
        return str(self)


def trainable_report(model: nn.Module, *extra: Any) -> TrainableReport:
    """Count trainable vs all parameters (shared tensors once) of ``model`` and any ``extra`` modules
    (e.g. ``handle.modules`` not registered on the model).

    Returns:
        a :class:`TrainableReport`; ``print(report)`` prints one line.
    """
    seen: set[int] = set()
    trainable = total = 0
    names: list[str] = []
    modules = [("", model)] + [(f"extra{i}.", m) for i, m in enumerate(extra)]
    for prefix, module in modules:
        for name, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            if p.requires_grad:
                trainable += p.numel()
                names.append(prefix + name)
    percent = 100.0 * trainable / total if total else 0.0
    return TrainableReport(trainable=trainable, total=total, percent=percent, names=names)
