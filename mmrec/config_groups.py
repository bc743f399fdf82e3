"""Helpers for grouped configs: typed, frozen dataclasses that LightningCLI reads from YAML groups.

Models and datamodules take their settings as a few groups (``backbone:``, ``adapter:``, ``prompts:``...)
instead of dozens of flat arguments. jsonargparse builds the dataclasses from YAML; checkpoints and
loggers store them as plain dicts (:func:`plain`), and :func:`as_config` turns such a dict back into the
dataclass (so ``load_from_checkpoint`` works with ``weights_only=True``).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class OptimConfig:
    ...     lr: float = 1e-3
    ...     warmup_steps: int = 0
    >>> as_config(OptimConfig, {"lr": 0.01}, "optim")
    OptimConfig(lr=0.01, warmup_steps=0)
    >>> plain(OptimConfig())
    {'lr': 0.001, 'warmup_steps': 0}
    >>> as_config(OptimConfig, {"learning_rate": 0.01}, "optim")
    Traceback (most recent call last):
    ...
    ValueError: optim has no field(s) ['learning_rate']; it takes ['lr', 'warmup_steps'].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

C = TypeVar("C")


def as_config(cls: type[C], value: C | Mapping[str, Any] | None, group: str) -> C:
    """``value`` as a ``cls`` config: a ``cls`` is returned as is, a mapping (a YAML group, or the plain
    dict a checkpoint stores) is checked and converted, ``None`` gives the defaults.

    Args:
        cls: the config dataclass.
        value: an instance, a mapping of its fields, or ``None``.
        group: the group's name in YAML (for error messages).

    Raises:
        ValueError: unknown fields (the message lists the known ones), or a value the dataclass rejects.
        TypeError: neither an instance nor a mapping.
    """
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if isinstance(value, Mapping):
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{group} has no field(s) {unknown}; it takes {names}.")
        return cls(**value)
    raise TypeError(f"{group} must be a {cls.__name__} or a mapping of its fields, got {type(value).__name__}.")


def plain(value: Any) -> Any:
    """Config dataclasses (also nested, in dicts / lists / tuples) as plain dicts and lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def plain_hparams(module: Any) -> None:
    """Turn the config dataclasses in a Lightning module's saved hyper-parameters into plain dicts, in place.

    Call it right after ``self.save_hyperparameters()``: under LightningCLI the saved values are the given
    config (already plain, with the ``_class_path`` that ``--ckpt_path`` re-parsing needs); in plain Python
    they are the ``__init__`` locals, dataclasses included, which ``torch.load(weights_only=True)`` and the
    loggers' YAML cannot read.
    """
    for store in (module._hparams, getattr(module, "_hparams_initial", None)):
        if store is not None:
            for key in list(store):
                store[key] = plain(store[key])


__all__ = ["as_config", "plain", "plain_hparams"]
