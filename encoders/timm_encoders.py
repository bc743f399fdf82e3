"""timm image encoders: ``timm/<model>`` -> pooled features, classifier removed (``num_classes=0``).

Any timm architecture works (``timm.list_models()``): the common ones are registered by name and
``timm/model`` takes ``model_name=`` for the rest (``create_encoder`` also resolves an unregistered
``timm/<arch>`` to the generic builder). Preprocessing is timm's eval transform for the model
(``resolve_data_config`` + ``create_transform``).

Weights (DESIGN §5), the ``weights`` argument:

- a pretrained tag of the architecture (``augreg2_in21k_ft_in1k``...), ``default`` (timm's default tag) or
  ``hf-hub:<org>/<repo>`` -> the Hugging Face hub (``timm/<arch>.<tag>``) or its local cache;
- a local checkpoint file (``.safetensors``, or a torch file loaded with ``weights_only=True``) -> a
  state dict loaded strictly; classifier weights in it (``model.pretrained_cfg["classifier"]``) are
  dropped, any other mismatch is an error;
- a local directory -> a timm ``save_for_hf`` folder: ``model.safetensors`` / ``pytorch_model.bin`` and
  optionally ``config.json`` (its ``model_args`` and ``pretrained_cfg`` — input size, mean, std — are used);
- ``random`` (or ``None``) -> explicit random init, seeded by ``seed`` and logged loudly.

``timm/tiny`` is ``vit_tiny_patch16_224`` shrunk to 32x32 images, patch 8, width 32, depth 2
(:data:`TINY_VIT_KWARGS`).

Precision: built in float32 and cast to ``dtype``; ``bfloat16`` runs on CPU and GPU,
``float16`` is meant for GPUs: on CPU it runs with torch 2.14 but slowly, and older torch builds lack
some float16 CPU kernels (use ``bfloat16`` on CPU).

Example:
    >>> from mmrec.encoders import create_encoder
    >>> from PIL import Image
    >>> enc = create_encoder("timm/tiny", weights="random")
    >>> enc.encode_raw([Image.new("RGB", (50, 40))]).shape
    torch.Size([1, 32])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mmrec.encoders import ENCODERS
from mmrec.encoders.base import FrozenEncoder
from mmrec.encoders.weights import (
    MissingWeightsError,
    find_checkpoint,
    hub_file_cached,
    hub_offline,
    load_state_dict_file,
    missing_weights_message,
    parse_weights,
    seeded,
    weights_identity,
)

log = logging.getLogger(__name__)

TINY_VIT: str = "vit_tiny_patch16_224"
#: Architecture overrides of the tiny test ViT.
TINY_VIT_KWARGS: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}
#: Its preprocessing (timm reads the input size from the pretrained config, not the model kwargs).
TINY_VIT_CFG_OVERLAY: dict[str, Any] = {"input_size": (3, 32, 32), "crop_pct": 1.0}

#: ``(model_name, weights, seed, model_kwargs, cfg_overlay) -> (model, weights identity)``, as :func:`load_timm`.
TimmLoader = Callable[
    [str, str | None, int, dict[str, Any] | None, dict[str, Any] | None], tuple[nn.Module, str]
]

# key -> (timm architecture, pooled feature dim); weights default to timm's default pretrained tag.
COMMON_MODELS: dict[str, tuple[str, int]] = {
    "vit_base_patch16_224": ("vit_base_patch16_224", 768),
    "vit_small_patch16_224": ("vit_small_patch16_224", 384),
    "vit_base_patch16_clip_224": ("vit_base_patch16_clip_224", 768),
    "resnet50": ("resnet50", 2048),
    "convnext_tiny": ("convnext_tiny", 768),
    "efficientnet_b0": ("efficientnet_b0", 1280),
}


def _error(what: str, arch: str, detail: str) -> MissingWeightsError:
    return MissingWeightsError(
        missing_weights_message(
            what, family=f"timm {arch}", hub_example="default (timm's default tag)", detail=detail
        )
    )


def _as_tuples(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}.{p}" for n in names for p in ("weight", "bias"))


def load_timm_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into a ``num_classes=0`` timm model, strictly except for the classifier.

    Classifier weights (``pretrained_cfg["classifier"]``) present in the file are dropped; when the keys
    still do not match, timm's own ``checkpoint_filter_fn`` of the model's module (which converts original
    checkpoint formats) is tried once. Anything else that does not fit is an error.

    Args:
        model: the timm model (``num_classes=0``).
        state_dict: tensors read from ``source``.
        source: the file, for error messages.

    Raises:
        ValueError: the checkpoint does not fit the architecture.
    """
    expected = set(model.state_dict())
    drop = set(_classifier_keys(model)) - expected
    sd = {k: v for k, v in state_dict.items() if k not in drop}
    if set(sd) != expected:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                filtered = filter_fn(dict(state_dict), model)
                sd = {k: v for k, v in filtered.items() if k not in drop}
            except Exception as e:  # model-specific filters assume their own formats
                log.debug("checkpoint_filter_fn of %s failed: %s", type(model).__name__, e)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"the checkpoint {source} does not fit timm {type(model).__name__} ({e}). Pass the architecture the "
            "checkpoint was saved from (model_name=...), or a folder saved with timm's save_for_hf."
        ) from e


def load_timm(
    model_name: str,
    weights: str | None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    cfg_overlay: dict[str, Any] | None = None,
) -> tuple[nn.Module, str]:
    """Build a timm model without classifier and load its weights as the weights policy says.

    Args:
        model_name: timm architecture, e.g. ``"resnet50"``.
        weights: tag / ``default`` / ``hf-hub:<id>``, file, directory, or ``random`` / ``None``.
        seed: seed of an explicit random init.
        model_kwargs: architecture keyword arguments (e.g. :data:`TINY_VIT_KWARGS`).
        cfg_overlay: keys replacing the model's pretrained config (input size, mean, std...).

    Returns:
        ``(model, weights identity)``: float32, CPU, eval mode, ``num_classes=0``.

    Raises:
        MissingWeightsError: the tag is unknown or cannot be downloaded (offline), the file / folder is
            missing or holds no checkpoint.
        ValueError: the checkpoint does not fit the architecture.

    Example:
        >>> model, identity = load_timm(TINY_VIT, "random", model_kwargs=TINY_VIT_KWARGS)
        >>> identity, model.num_features
        ('random-init:0', 32)
    """
    import timm

    kwargs = dict(model_kwargs or {})
    overlay = dict(cfg_overlay or {})
    spec = parse_weights(weights)
    if spec.kind == "hub":
        if kwargs:
            raise ValueError(
                f"hub weights {spec.value!r} cannot be loaded into a modified {model_name}; use a local file or "
                "folder (or weights: random)."
            )
        full = spec.value if spec.value.startswith("hf-hub:") else model_name
        if not spec.value.startswith("hf-hub:") and spec.value != "default":
            full = f"{model_name}.{spec.value}"
        if not full.startswith("hf-hub:"):
            try:
                pcfg = timm.models.get_pretrained_cfg(full, allow_unregistered=False)
            except RuntimeError as e:
                tags = timm.list_pretrained(f"{model_name}.*")
                raise _error(spec.value, model_name, f"{e} Known: {tags or 'none'}") from e
            if pcfg is None or not (pcfg.hf_hub_id or pcfg.url):
                raise _error(spec.value, model_name, "timm has no downloadable weights for it")
            if hub_offline():
                files = (
                    [pcfg.hf_hub_filename]
                    if pcfg.hf_hub_filename
                    else ["model.safetensors", "pytorch_model.bin"]
                )
                if not (pcfg.hf_hub_id and hub_file_cached(pcfg.hf_hub_id, files)):
                    where = pcfg.hf_hub_id or pcfg.url
                    raise _error(
                        spec.value,
                        model_name,
                        f"HF_HUB_OFFLINE is set and {where} is not in the local hub cache",
                    )
            identity = f"hub:{pcfg.hf_hub_id or pcfg.url}".rstrip("/")
            if pcfg.hf_hub_id and f".{pcfg.tag}" not in pcfg.hf_hub_id and pcfg.tag:
                identity += f".{pcfg.tag}"
        else:
            identity = f"hub:{full}"
            if hub_offline() and not hub_file_cached(full[len("hf-hub:") :], ["config.json"]):
                raise _error(
                    spec.value, model_name, f"HF_HUB_OFFLINE is set and {full} is not in the local hub cache"
                )
        try:
            model = timm.create_model(
                full, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay or None
            )
        except Exception as e:  # offline mode, HTTP errors, missing cache entries
            raise _error(spec.value, model_name, f"{type(e).__name__}: {e}") from e
        return model.eval(), identity

    if spec.kind == "dir":
        root = Path(spec.value)
        ckpt = find_checkpoint(root)
        if ckpt is None:
            raise _error(
                spec.value,
                model_name,
                "no model.safetensors / pytorch_model.bin (or single checkpoint) in it",
            )
        if (root / "config.json").is_file():
            cfg = json.loads((root / "config.json").read_text())
            arch = cfg.get("architecture")
            if arch and arch != model_name:
                raise ValueError(
                    f"{root} holds timm {arch!r} weights but the encoder is {model_name!r}; use "
                    f"create_encoder('timm/model', model_name={arch!r}, weights=...)."
                )
            folder_args = {k: v for k, v in cfg.get("model_args", {}).items() if k != "num_classes"}
            kwargs = {**kwargs, **_as_tuples(folder_args)}
            overlay = {**_as_tuples(_known_cfg_keys(cfg.get("pretrained_cfg", {}))), **overlay}
        weights_file = str(ckpt)
    elif spec.kind == "file":
        weights_file = spec.value
    else:
        weights_file = ""

    try:
        with seeded(seed):
            model = timm.create_model(
                model_name, pretrained=False, num_classes=0, pretrained_cfg_overlay=overlay or None, **kwargs
            )
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(
                f"unknown timm architecture {model_name!r}; see timm.list_models('<pattern>')."
            ) from e
        raise
    if weights_file:
        load_timm_state_dict(model, load_state_dict_file(weights_file), weights_file)
    return model.eval(), weights_identity(spec, seed)


def _known_cfg_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    from timm.models import PretrainedCfg

    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {k: v for k, v in cfg.items() if k in fields}


class TimmImageEncoder(FrozenEncoder):
    """A timm backbone's pooled features: PIL image -> ``(B, num_features)``.

    Args:
        name: registry key recorded in fingerprints.
        model_name: timm architecture.
        weights: see the module docstring.
        dtype: ``float32`` / ``bfloat16`` / ``float16`` (see Precision above).
        normalize: L2-normalise the outputs (default False).
        seed: seed of an explicit random init.
        model_kwargs: architecture keyword arguments (tiny test models).
        cfg_overlay: pretrained-config overrides (input size, mean, std...).
        loader: builds the model and loads its weights, with :func:`load_timm`'s signature and return value
            (default :func:`load_timm`); families whose checkpoints need their own loading code (e.g.
            ``image/efficientnet-lite*``) pass theirs and reuse the preprocessing and encoding here.

    Example:
        >>> enc = TimmImageEncoder("timm/tiny", TINY_VIT, "random", model_kwargs=TINY_VIT_KWARGS,
        ...                        cfg_overlay=TINY_VIT_CFG_OVERLAY)
        >>> enc.preprocess(Image.new("RGB", (64, 48))).shape
        torch.Size([3, 32, 32])
    """

    modality = "image"

    def __init__(
        self,
        name: str,
        model_name: str,
        weights: str | None,
        dtype: str = "float32",
        normalize: bool = False,
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
        cfg_overlay: dict[str, Any] | None = None,
        loader: TimmLoader | None = None,
    ) -> None:
        import timm
        from timm.data import create_transform, resolve_data_config

        model, identity = (loader or load_timm)(model_name, weights, seed, model_kwargs, cfg_overlay)
        super().__init__(name, identity, dtype, normalize)
        self.model_name = model_name
        self.model = model
        self._data_cfg = resolve_data_config({}, model=model)
        self._transform = create_transform(**self._data_cfg, is_training=False)
        self.output_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self._timm_version = timm.__version__
        self.freeze()

    def preprocess(self, raw: Image.Image) -> torch.Tensor:
        """PIL image -> ``(3, H, W)`` float tensor (timm's eval resize / crop / normalisation)."""
        if not isinstance(raw, Image.Image):
            raise TypeError(f"{self.name} expects a PIL.Image.Image, got {type(raw).__name__}.")
        return self._transform(raw.convert("RGB"))

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)  # num_classes=0: forward returns the pooled pre-logits features

    def preprocessing_config(self) -> dict[str, Any]:
        return {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in self._data_cfg.items()},
            "timm": self._timm_version,
        }

    def pooling(self) -> str:
        pool = getattr(self.model, "global_pool", None)
        if isinstance(pool, str):
            return pool or "none"
        return str(getattr(pool, "pool_type", type(pool).__name__ if pool is not None else "model-default"))


# ------------------------------------------------------------------------------------------------ registry
def _register_common(key: str, arch: str, dim: int) -> None:
    @ENCODERS.register(f"timm/{key}", modality="image", dim=dim, default_weights="default")
    def _build(
        weights: str | None = "default", dtype: str = "float32", normalize: bool = False, seed: int = 0
    ) -> TimmImageEncoder:
        return TimmImageEncoder(f"timm/{key}", arch, weights, dtype, normalize, seed)

    _build.__doc__ = f"timm {arch} pooled features ({dim}-d; default weights: timm's default tag)."


for _key, (_arch, _dim) in COMMON_MODELS.items():
    _register_common(_key, _arch, _dim)


@ENCODERS.register("timm/model", modality="image", generic=True)
def timm_image(
    model_name: str,
    weights: str | os.PathLike[str] | None = "default",
    dtype: str = "float32",
    normalize: bool = False,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmImageEncoder:
    """Any timm architecture's pooled features.

    Args:
        model_name: e.g. ``"eva02_base_patch14_224"`` (``timm.list_models()``).
        weights: tag / ``default`` / ``hf-hub:<id>``, file, directory or ``random``.
        dtype: compute dtype.
        normalize: L2-normalise the outputs.
        seed: seed of an explicit random init.
        model_kwargs: architecture keyword arguments passed to ``timm.create_model``.

    Example:
        >>> enc = timm_image("resnet18", weights="random")
        >>> enc.output_dim
        512
    """
    return TimmImageEncoder(
        f"timm/{model_name}",
        model_name,
        None if weights is None else str(weights),
        dtype,
        normalize,
        seed,
        model_kwargs,
    )


@ENCODERS.register("timm/tiny", modality="image", dim=TINY_VIT_KWARGS["embed_dim"], tiny=True)
def timm_tiny(
    weights: str | os.PathLike[str] | None = "random",
    dtype: str = "float32",
    normalize: bool = False,
    seed: int = 0,
) -> TimmImageEncoder:
    """Tiny test ViT (32x32 images, patch 8, width 32, depth 2); ``weights``: ``random``, or a file / folder of it."""
    return TimmImageEncoder(
        "timm/tiny",
        TINY_VIT,
        None if weights is None else str(weights),
        dtype,
        normalize,
        seed,
        TINY_VIT_KWARGS,
        TINY_VIT_CFG_OVERLAY,
    )


__all__ = [
    "COMMON_MODELS",
    "TINY_VIT",
    "TINY_VIT_CFG_OVERLAY",
    "TINY_VIT_KWARGS",
    "TimmImageEncoder",
    "TimmLoader",
    "load_timm",
    "load_timm_state_dict",
]
