"""What every item source shares: the two "no vector for this item" outcomes and text joining.

A source hands out raw items (``PIL.Image``, :class:`~mmrec.encoders.base.AudioClip`,
:class:`~mmrec.encoders.base.VideoClip` or ``str``) decoded by :func:`mmrec.encoders.media.decode`. A null
cell raises :class:`MissingValue` (recorded as ``missing value``, not a failure); a broken one raises
:class:`~mmrec.encoders.media.MediaError` with a ``reason``; a shard that cannot be read at all raises
:class:`ShardError`.

Example:
    >>> join_text(["Red dress", None, "  cotton  "])
    'Red dress. cotton'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec.encoders.media import load_text


class ShardError(ValueError):
    """A shard is missing, unreadable, malformed or unsafe (the message names the shard and member)."""


class MissingValue(Exception):
    """The item has no value in this column (a null cell): recorded as ``missing value``, not a failure."""

    reason = "missing value"


def is_null(value: Any) -> bool:
    """``None`` or a float NaN (pandas' null)."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def join_text(parts: Sequence[Any]) -> str:
    """Join text fields with ``". "``, skipping nulls and blanks; raises ``MediaError("empty text")``.

    Example:
        >>> join_text([" wool scarf", ""])
        'wool scarf'
    """
    texts = [str(p).strip() for p in parts if not is_null(p) and str(p).strip()]
    return load_text(". ".join(texts)) if texts else load_text(None)
