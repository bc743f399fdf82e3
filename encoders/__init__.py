"""Frozen foundation encoders, one registry: ``create_encoder("family/name", ...)``.

Each family lives in its own module and registers its encoders on import; :data:`FAMILY_MODULES` lists
them. Every registered encoder has a tiny variant (registered with ``tiny=True``) used by the tests, which
loop over the whole registry.

Registration metadata (``ENCODERS.register(key, **meta)``), all optional:

- ``modality`` (``"image"``...) and ``dim`` (output size): shown by ``mmrec encoders list`` without building
  the model (``?`` when absent);
- ``default_weights``: what ``weights`` defaults to (a hub tag / id), for listings;
- ``tiny=True``: a test-sized variant. ``tests/test_encoder_registry.py`` builds every tiny encoder with
  ``weights="random"`` plus ``test_kwargs``, encodes a batch of 2 generated raw items of its modality and
  checks the contract (shape, finite, frozen, deterministic, fingerprint);
- ``test_kwargs``: keyword arguments for that test, replacing the default ``{"weights": "random"}``:
  either a dict, or a callable ``(tmp_path: pathlib.Path) -> dict`` for a tiny encoder that needs a file
  written first (e.g. ``test_kwargs=lambda tmp: {"weights": write_tiny_checkpoint(tmp)}``). Tiny builders
  that accept ``seed`` get ``seed=1`` too, which must change the weights identity;
- ``generic=True``: a ``family/model`` builder taking ``model_name=``; ``create_encoder("family/<name>")``
  falls back to it for names that are not registered (``create_encoder("timm/resnet18")``,
  ``create_encoder("hf_text/BAAI/bge-small-en-v1.5")``).

Example:
    >>> from mmrec.encoders import create_encoder, list_encoders
    >>> "text/minilm" in list_encoders("text/*")  # the bundled, offline default text encoder
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from mmrec.encoders.base import MODALITIES, AudioClip, FrozenEncoder, VideoClip
from mmrec.encoders.weights import MissingWeightsError, parse_weights
from mmrec.registry import Registry

ENCODERS: Registry[FrozenEncoder] = Registry("encoder")

# Family modules register their encoders into ENCODERS when imported.
FAMILY_MODULES: tuple[str, ...] = (
    "mmrec.encoders.openclip_encoders",
    "mmrec.encoders.timm_encoders",
    "mmrec.encoders.efficientnet_encoders",
    "mmrec.encoders.text_encoders",
    "mmrec.encoders.audio_encoders",
    "mmrec.encoders.video_encoders",
    "mmrec.encoders.classic_encoders",
)


def _load_families() -> None:
    # importing is idempotent (sys.modules caches it), so no "already loaded" flag is needed
    for module in FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def create_encoder(name: str, /, **kwargs: Any) -> FrozenEncoder:
    """Build a registered encoder, frozen and in eval mode.

    Args:
        name: registry key, e.g. ``"open_clip/ViT-B-32"``, ``"timm/vit_base_patch16_224"``, ``"text/minilm"``;
            an unregistered ``family/<name>`` goes to the family's generic ``family/model`` builder with
            ``model_name=<name>`` when there is one.
        **kwargs: family options (``weights``, ``dtype``, ``normalize``, ...).
    """
    _load_families()
    if name not in ENCODERS and "/" in name:
        family, _, model_name = name.partition("/")
        generic = f"{family}/model"
        if generic in ENCODERS and ENCODERS.meta(generic).get("generic") and "model_name" not in kwargs:
            return ENCODERS.create(generic, model_name=model_name, **kwargs)
    return ENCODERS.create(name, **kwargs)


def list_encoders(pattern: str = "*", **meta: object) -> list[str]:
    """Registered encoder names matching a shell pattern (and metadata such as ``tiny=True``)."""
    _load_families()
    return ENCODERS.list(pattern, **meta)


__all__ = [
    "ENCODERS",
    "MODALITIES",
    "AudioClip",
    "FrozenEncoder",
    "MissingWeightsError",
    "VideoClip",
    "create_encoder",
    "list_encoders",
    "parse_weights",
]
