"""Raw-text validation shared by every encoder family that reads text (transformers, open_clip, ...)."""

from __future__ import annotations

from typing import Any


def check_text(raw: Any, name: str = "text encoder") -> str:
    """Validate one raw text: a ``str`` with at least one non-space character; returned unchanged.

    Raises:
        TypeError: not a string.
        ValueError: empty or whitespace-only (the embed pipeline records the item as a failure).

    Example:
        >>> check_text("a red dress")
        'a red dress'
    """
    if not isinstance(raw, str):
        raise TypeError(f"{name} expects a str, got {type(raw).__name__}.")
    if not raw.strip():
        raise ValueError(
            f"{name} got an empty or whitespace-only text; give the item a title or description, or leave it "
            "out (it is then recorded as a failed item, its vector masked)."
        )
    return raw
