"""Which split and masking a sequential datamodule evaluates with: a protocol preset and / or explicit
``split``, ``mask_history``, ``holdout_fraction`` and ``split_seed`` resolved into one
:class:`~mmrec.eval_protocol.EvalProtocol` (conflicts are errors that say which to drop)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mmrec.eval_protocol import HOLDOUT_SPLITS, EvalProtocol, preset

SplitName = Literal["auto", "leave-one-out", "given", "cold-items", "temporal"]
SPLIT_NAMES: tuple[str, ...] = ("auto", "leave-one-out", "given", "cold-items", "temporal")


def resolve_protocol(
    name: str | None,
    split: str,
    mask_history: bool | None,
    has_split: bool,
    *,
    holdout_fraction: float | None = None,
    split_seed: int | None = None,
) -> EvalProtocol:
    """The protocol from a preset name and / or explicit ``split``, ``mask_history``, ``holdout_fraction`` and
    ``split_seed`` (see :class:`~mmrec.datamodules.sequential.SequentialDataModule`).

    Args:
        name: a preset of :func:`~mmrec.eval_protocol.preset` (``recbole``, ``masked``...) or ``None``.
        split: one of :data:`SPLIT_NAMES`; ``"auto"`` = the preset's, else given when ``has_split``.
        mask_history: ``None`` = the preset's (not masked without a preset); an explicit value must agree
            with the preset.
        has_split: whether the dataset has a ``split`` column (``"auto"`` then means ``given``).
        holdout_fraction: share held out by the ``cold-items`` / ``temporal`` splits (``None`` = preset's).
        split_seed: seed of the ``cold-items`` draw (``None`` = preset's).

    Raises:
        ValueError: when the explicit values contradict the preset, or a holdout option is given for a split
            without a holdout.

    Example:
        >>> p = resolve_protocol(None, "auto", None, has_split=False)
        >>> p.split, p.mask_history
        ('leave-one-out', False)
        >>> resolve_protocol("cold-items", "auto", None, False, holdout_fraction=0.3).holdout_fraction
        0.3
    """
    base = _resolve_base_protocol(name, split, mask_history, has_split)
    if holdout_fraction is None and split_seed is None:
        return base
    if base.split not in HOLDOUT_SPLITS:
        raise ValueError(
            f"holdout_fraction / split_seed only apply to the splits {HOLDOUT_SPLITS} (protocol: cold-items / "
            f"temporal), but the split is {base.split}; drop them or choose one of those splits."
        )
    return dataclasses.replace(
        base,
        holdout_fraction=base.holdout_fraction if holdout_fraction is None else float(holdout_fraction),
        split_seed=base.split_seed if split_seed is None else int(split_seed),
    )


def _resolve_base_protocol(
    name: str | None, split: str, mask_history: bool | None, has_split: bool
) -> EvalProtocol:
    if name is not None:
        base = preset(name)
        if split not in ("auto", base.split):
            raise ValueError(
                f"protocol {name!r} evaluates on the {base.split} split, but split: {split} was given; "
                "drop one of them."
            )
        if mask_history is not None and mask_history != base.mask_history:
            raise ValueError(
                f"protocol {name!r} has mask_history: {str(base.mask_history).lower()}, but mask_history: "
                f"{str(mask_history).lower()} was given; drop one of them (or use the preset that masks as you "
                "want: masked / mmrec mask history, recbole / given do not)."
            )
        return base
    if split in HOLDOUT_SPLITS:
        return dataclasses.replace(preset(split), mask_history=bool(mask_history))
    resolved = "given" if (split == "given" or (split == "auto" and has_split)) else "leave-one-out"
    return EvalProtocol(split=resolved, mask_history=bool(mask_history))  # type: ignore[arg-type]
