"""open_clip encoders: ``open_clip/<arch>`` image towers and ``open_clip_text/<arch>`` text towers.

Any open_clip architecture works (``open_clip.list_models()``); the common ones are registered by name and
``open_clip/model`` / ``open_clip_text/model`` take ``model_name=`` for the rest (``create_encoder`` also
resolves an unregistered ``open_clip/<arch>`` to the generic builder).

Weights (DESIGN §5), the ``weights`` argument:

- an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...; see
  ``open_clip.list_pretrained_tags_by_model(arch)``) or ``hf-hub:<org>/<repo>`` -> downloaded from the hub
  (or read from the local hub cache);
- a local checkpoint file (``.safetensors``, ``.bin``, ``.pt``) -> loaded through open_clip's own
  ``pretrained=<file>`` path (strict, ``weights_only=True``);
- a local directory -> an open_clip folder with ``open_clip_config.json`` (architecture and preprocessing
  taken from it, open_clip's ``local-dir:`` schema), or any folder holding one checkpoint such as
  ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``;
- ``random`` (or ``None``) -> explicit random init, seeded by ``seed`` and logged loudly.

``open_clip/tiny`` and ``open_clip_text/tiny`` are a 2-layer, width-32 CLIP built from an inline config
(:data:`TINY_CLIP_CFG`) for tests.

Precision: the model is built in float32 and cast to ``dtype``. ``bfloat16`` runs on CPU and GPU;
``float16`` is meant for GPUs: on CPU it runs with torch 2.14 but slowly, and older torch builds lack
some float16 CPU kernels (use ``bfloat16`` on CPU).

Example:
    >>> from mmrec.encoders import create_encoder
    >>> enc = create_encoder("open_clip/tiny", weights="random")
    >>> from PIL import Image
    >>> enc.encode_raw([Image.new("RGB", (40, 30))]).shape
    torch.Size([1, 32])
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mmrec.encoders import ENCODERS
from mmrec.encoders.base import FrozenEncoder
from mmrec.encoders.text_input import check_text
from mmrec.encoders.weights import (
    MissingWeightsError,
    find_checkpoint,
    hub_file_cached,
    hub_offline,
    missing_weights_message,
    parse_weights,
    seeded,
    weights_identity,
)

log = logging.getLogger(__name__)

#: Checkpoint names looked for in a weights directory, in order (open_clip's own names first: open_clip
#: hub repos also hold a ``model.safetensors`` in the *transformers* format).
OPEN_CLIP_CHECKPOINTS: tuple[str, ...] = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.pth",
    "model.pt",
)

#: The tiny test CLIP, built on top of the ``ViT-B-32`` config (every key below overrides it).
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# name -> (open_clip architecture, default pretrained tag, embed dim). Dims are stored as registry
# metadata so that `mmrec encoders list` does not build models.
COMMON_MODELS: dict[str, tuple[str, str, int]] = {
    "ViT-B-32": ("ViT-B-32", "laion2b_s34b_b79k", 512),
    "ViT-B-16": ("ViT-B-16", "laion2b_s34b_b88k", 512),
    "ViT-L-14": ("ViT-L-14", "laion2b_s32b_b82k", 768),
    "ViT-H-14": ("ViT-H-14", "laion2b_s32b_b79k", 1024),
    "RN50": ("RN50", "openai", 1024),
    "ViT-B-16-SigLIP": ("ViT-B-16-SigLIP", "webli", 768),
    "ViT-SO400M-14-SigLIP": ("ViT-SO400M-14-SigLIP", "webli", 1152),
}


# ------------------------------------------------------------------------------------------------ loading
def _open_clip_error(what: str, detail: str, arch: str) -> MissingWeightsError:
    return MissingWeightsError(
        missing_weights_message(
            what, family=f"open_clip {arch}", hub_example="laion2b_s34b_b79k", detail=detail
        )
    )


def load_open_clip(
    model_name: str,
    weights: str | None,
    seed: int = 0,
    model_cfg: dict[str, Any] | None = None,
) -> tuple[nn.Module, str, str, int]:
    """Build an open_clip model and load its weights as the weights policy says.

    Args:
        model_name: open_clip architecture (``ViT-B-32``...), ignored when ``weights`` is a folder with an
            ``open_clip_config.json`` or an ``hf-hub:`` id (they carry their own architecture).
        weights: pretrained tag / ``hf-hub:<id>``, checkpoint file, directory, or ``random`` / ``None``.
        seed: seed of an explicit random init.
        model_cfg: keys overriding the architecture's config (e.g. :data:`TINY_CLIP_CFG`).

    Returns:
        ``(model, weights identity, tokenizer source for open_clip.get_tokenizer, embed dim)``; the model is
        float32, on CPU, in eval mode.

    Raises:
        MissingWeightsError: the tag cannot be downloaded (offline hub), the file / folder is missing or
            holds no checkpoint.

    Example:
        >>> model, identity, _, dim = load_open_clip("ViT-B-32", "random", model_cfg=TINY_CLIP_CFG)
        >>> identity, dim
        ('random-init:0', 32)
    """
    import open_clip

    overrides = copy.deepcopy(model_cfg or {})
    spec = parse_weights(weights)
    source = model_name
    base_cfg = open_clip.get_model_config(model_name)
    kwargs: dict[str, Any] = {}
    if spec.kind == "dir" and (Path(spec.value) / "open_clip_config.json").is_file():
        source = f"local-dir:{spec.value}"
        base_cfg = json.loads((Path(spec.value) / "open_clip_config.json").read_text()).get("model_cfg")
        overrides = {}  # the folder describes its own architecture
        if find_checkpoint(spec.value, (*OPEN_CLIP_CHECKPOINTS, "model.safetensors")) is None:
            raise _open_clip_error(
                spec.value, "the folder has open_clip_config.json but no checkpoint", model_name
            )
    elif spec.kind == "hub" and spec.value.startswith("hf-hub:"):
        source = spec.value
        base_cfg = None
        overrides = {}
    elif base_cfg is None:
        raise ValueError(
            f"unknown open_clip architecture {model_name!r}; pick one of open_clip.list_models(), "
            f"e.g. {', '.join(sorted(COMMON_MODELS))}."
        )
    cfg = _merge_cfg(base_cfg, overrides) if base_cfg is not None else None
    if cfg is not None:  # open_clip merges overrides shallowly: hand it whole merged sub-configs
        overrides = {k: cfg[k] for k in overrides}

    pretrained: str | None = None
    if spec.kind == "hub" and not source.startswith("hf-hub:"):
        if overrides:
            raise ValueError(
                f"hub tag {spec.value!r} cannot be loaded into a modified {model_name} config; use a local "
                "checkpoint file or directory (or weights: random)."
            )
        tag_cfg = open_clip.get_pretrained_cfg(model_name, spec.value)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise _open_clip_error(
                spec.value, f"not a pretrained tag of {model_name}; known tags: {tags}", model_name
            )
        pretrained = spec.value
        # e.g. the `openai` weights were trained with QuickGELU: build the matching activation
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        repo, fname = os.path.split(tag_cfg.get("hf_hub", ""))
        fname = fname or "open_clip_pytorch_model.bin"
        _check_offline_cache(
            repo,
            [fname, "open_clip_model.safetensors", f"{Path(fname).stem}.safetensors"],
            spec.value,
            model_name,
        )
    elif spec.kind == "hub":  # hf-hub:<repo>
        _check_offline_cache(spec.value[len("hf-hub:") :], ["open_clip_config.json"], spec.value, model_name)
    elif spec.kind == "file":
        pretrained = spec.value
    elif spec.kind == "dir" and not source.startswith("local-dir:"):
        ckpt = find_checkpoint(spec.value, (*OPEN_CLIP_CHECKPOINTS, "model.safetensors", "pytorch_model.bin"))
        if ckpt is None:
            raise _open_clip_error(
                spec.value,
                f"no single checkpoint found in the folder (looked for {OPEN_CLIP_CHECKPOINTS})",
                model_name,
            )
        pretrained = str(ckpt)

    try:
        if spec.kind == "random":
            with seeded(seed):
                model = open_clip.create_model(source, pretrained=None, **kwargs, **overrides)
        else:
            model = open_clip.create_model(
                source, pretrained=pretrained, require_pretrained=True, **kwargs, **overrides
            )
    except MissingWeightsError:
        raise
    except Exception as e:  # hub clients raise many types (offline mode, HTTP, missing cache entries)
        if spec.kind in ("file", "dir") and isinstance(e, RuntimeError) and "state_dict" in str(e):
            raise ValueError(
                f"the checkpoint {spec.value} does not fit open_clip {model_name} ({e}); pass the matching "
                "architecture or another checkpoint."
            ) from e
        raise _open_clip_error(spec.value or model_name, f"{type(e).__name__}: {e}", model_name) from e
    model.eval()
    if cfg is None:  # hf-hub: the config came with the weights
        cfg = open_clip.get_model_config(source) or {}
    embed_dim = int(cfg.get("embed_dim", 0)) or _infer_embed_dim(model)
    identity = weights_identity(spec, seed)
    return model, identity, source, embed_dim


def _check_offline_cache(repo: str, filenames: list[str], what: str, arch: str) -> None:
    """With ``HF_HUB_OFFLINE`` set, fail fast unless the hub cache already holds the weights."""
    if hub_offline() and not (repo and hub_file_cached(repo, filenames)):
        detail = f"HF_HUB_OFFLINE is set and {repo or 'the weights'} is not in the local hub cache"
        raise _open_clip_error(what, detail, arch)


def _merge_cfg(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _infer_embed_dim(model: nn.Module) -> int:
    visual = getattr(model, "visual", None)
    dim = getattr(visual, "output_dim", None)
    if dim:
        return int(dim)
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[-1])
    raise RuntimeError("could not determine the embedding size of this open_clip model.")


# ------------------------------------------------------------------------------------------------ encoders
class OpenCLIPImageEncoder(FrozenEncoder):
    """The image tower of an open_clip model: PIL image -> ``(B, embed_dim)``.

    Args:
        name: registry key recorded in fingerprints.
        model_name: open_clip architecture (``ViT-B-32``...).
        weights: see the module docstring.
        dtype: ``float32`` / ``bfloat16`` / ``float16`` (see Precision above).
        normalize: L2-normalise the outputs (CLIP default: True).
        seed: seed of an explicit random init.
        model_cfg: overrides of the architecture's config (tiny test models).

    Example:
        >>> enc = OpenCLIPImageEncoder("open_clip/tiny", "ViT-B-32", "random", model_cfg=TINY_CLIP_CFG)
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
        normalize: bool = True,
        seed: int = 0,
        model_cfg: dict[str, Any] | None = None,
    ) -> None:
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        model, identity, _, dim = load_open_clip(model_name, weights, seed, model_cfg)
        super().__init__(name, identity, dtype, normalize)
        self.model_name = model_name
        self.visual = model.visual
        del model  # the text tower is not needed
        self._pp_cfg = dict(self.visual.preprocess_cfg)
        self._transform = image_transform_v2(PreprocessCfg(**self._pp_cfg), is_train=False)
        self.output_dim = dim
        self._open_clip_version = open_clip.__version__
        self.freeze()

    def preprocess(self, raw: Image.Image) -> torch.Tensor:
        """PIL image -> ``(3, H, W)`` float tensor (resize, centre crop, CLIP normalisation)."""
        if not isinstance(raw, Image.Image):
            raise TypeError(f"{self.name} expects a PIL.Image.Image, got {type(raw).__name__}.")
        return self._transform(raw.convert("RGB"))

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.visual(batch)

    def preprocessing_config(self) -> dict[str, Any]:
        return {**self._pp_cfg, "open_clip": self._open_clip_version}

    def pooling(self) -> str:
        return "clip-image-projection"


class OpenCLIPTextEncoder(FrozenEncoder):
    """The text tower of an open_clip model: ``str`` -> ``(B, embed_dim)``.

    ``preprocess`` checks the text (empty / whitespace-only raises ``ValueError``); ``collate`` tokenises
    with the model's own tokenizer into ``(B, context_length)`` token ids (longer text is truncated).

    Args:
        name: registry key recorded in fingerprints.
        model_name: open_clip architecture.
        weights: see the module docstring.
        dtype: ``float32`` / ``bfloat16`` / ``float16`` (see Precision above).
        normalize: L2-normalise the outputs (CLIP default: True).
        seed: seed of an explicit random init.
        model_cfg: overrides of the architecture's config (tiny test models).

    Example:
        >>> enc = OpenCLIPTextEncoder("open_clip_text/tiny", "ViT-B-32", "random", model_cfg=TINY_CLIP_CFG)
        >>> enc.collate([enc.preprocess("a red dress")]).shape
        torch.Size([1, 16])
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        model_name: str,
        weights: str | None,
        dtype: str = "float32",
        normalize: bool = True,
        seed: int = 0,
        model_cfg: dict[str, Any] | None = None,
    ) -> None:
        import open_clip

        model, identity, source, dim = load_open_clip(model_name, weights, seed, model_cfg)
        super().__init__(name, identity, dtype, normalize)
        self.model_name = model_name
        model.visual = nn.Identity()  # drop the image tower; encode_text does not use it
        self.model = model
        self.context_length = int(getattr(model, "context_length", 77))
        self.tokenizer = open_clip.get_tokenizer(source, context_length=self.context_length)
        self.output_dim = dim
        self._open_clip_version = open_clip.__version__
        self.freeze()

    def preprocess(self, raw: str) -> str:
        """Check one text (must be a non-blank ``str``) and return it unchanged."""
        return check_text(raw, self.name)

    def collate(self, items: Sequence[str]) -> torch.Tensor:
        """Texts -> ``(B, context_length)`` int64 token ids."""
        return self.tokenizer(list(items), context_length=self.context_length)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(batch)

    def preprocessing_config(self) -> dict[str, Any]:
        return {
            "tokenizer": type(self.tokenizer).__name__,
            "context_length": self.context_length,
            "open_clip": self._open_clip_version,
        }

    def pooling(self) -> str:
        return f"clip-text-{getattr(self.model, 'text_pool_type', 'eos')}-projection"


# ------------------------------------------------------------------------------------------------ registry
def _register_common(key: str, arch: str, tag: str, dim: int) -> None:
    @ENCODERS.register(f"open_clip/{key}", modality="image", dim=dim, default_weights=tag)
    def _image(
        weights: str | None = tag, dtype: str = "float32", normalize: bool = True, seed: int = 0
    ) -> OpenCLIPImageEncoder:
        return OpenCLIPImageEncoder(f"open_clip/{key}", arch, weights, dtype, normalize, seed)

    @ENCODERS.register(f"open_clip_text/{key}", modality="text", dim=dim, default_weights=tag)
    def _text(
        weights: str | None = tag, dtype: str = "float32", normalize: bool = True, seed: int = 0
    ) -> OpenCLIPTextEncoder:
        return OpenCLIPTextEncoder(f"open_clip_text/{key}", arch, weights, dtype, normalize, seed)

    _image.__doc__ = f"open_clip {arch} image tower (default weights: {tag})."
    _text.__doc__ = f"open_clip {arch} text tower (default weights: {tag})."


for _key, (_arch, _tag, _dim) in COMMON_MODELS.items():
    _register_common(_key, _arch, _tag, _dim)


@ENCODERS.register("open_clip/model", modality="image", generic=True)
def open_clip_image(
    model_name: str,
    weights: str | None,
    dtype: str = "float32",
    normalize: bool = True,
    seed: int = 0,
) -> OpenCLIPImageEncoder:
    """Any open_clip architecture's image tower.

    Args:
        model_name: e.g. ``"EVA02-B-16"`` (``open_clip.list_models()``).
        weights: pretrained tag, file, directory or ``random``.
        dtype: compute dtype.
        normalize: L2-normalise the outputs.
        seed: seed of an explicit random init.

    Example:
        >>> enc = open_clip_image("convnext_base_w", weights="laion2b_s13b_b82k")  # doctest: +SKIP
    """
    return OpenCLIPImageEncoder(f"open_clip/{model_name}", model_name, weights, dtype, normalize, seed)


@ENCODERS.register("open_clip_text/model", modality="text", generic=True)
def open_clip_text(
    model_name: str,
    weights: str | None,
    dtype: str = "float32",
    normalize: bool = True,
    seed: int = 0,
) -> OpenCLIPTextEncoder:
    """Any open_clip architecture's text tower (arguments as :func:`open_clip_image`).

    Example:
        >>> enc = open_clip_text("ViT-B-32", weights="openai")  # doctest: +SKIP
    """
    return OpenCLIPTextEncoder(f"open_clip_text/{model_name}", model_name, weights, dtype, normalize, seed)


@ENCODERS.register("open_clip/tiny", modality="image", dim=TINY_CLIP_CFG["embed_dim"], tiny=True)
def open_clip_tiny(
    weights: str | None = "random", dtype: str = "float32", normalize: bool = True, seed: int = 0
) -> OpenCLIPImageEncoder:
    """Tiny test CLIP image tower (2 layers, width 32, 32x32 images, patch 8): :data:`TINY_CLIP_CFG`.

    ``weights`` is ``random`` or a checkpoint file / folder of this tiny CLIP (hub tags do not apply).
    """
    return OpenCLIPImageEncoder("open_clip/tiny", "ViT-B-32", weights, dtype, normalize, seed, TINY_CLIP_CFG)


@ENCODERS.register("open_clip_text/tiny", modality="text", dim=TINY_CLIP_CFG["embed_dim"], tiny=True)
def open_clip_text_tiny(
    weights: str | None = "random", dtype: str = "float32", normalize: bool = True, seed: int = 0
) -> OpenCLIPTextEncoder:
    """Tiny test CLIP text tower (2 layers, width 32, context 16, the standard CLIP tokenizer)."""
    return OpenCLIPTextEncoder(
        "open_clip_text/tiny", "ViT-B-32", weights, dtype, normalize, seed, TINY_CLIP_CFG
    )


def tiny_clip_model(seed: int = 0) -> nn.Module:
    """A full tiny open_clip ``CLIP`` (both towers, random, seeded) — tests save it as a checkpoint.

    Example:
        >>> import safetensors.torch, tempfile, os
        >>> from mmrec.encoders import create_encoder
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
        >>> safetensors.torch.save_file(tiny_clip_model().state_dict(), path)
        >>> create_encoder("open_clip/tiny", weights=path).weights_identity.startswith("sha256:")
        True
    """
    model, _, _, _ = load_open_clip("ViT-B-32", "random", seed, TINY_CLIP_CFG)
    return model


__all__ = [
    "COMMON_MODELS",
    "TINY_CLIP_CFG",
    "OpenCLIPImageEncoder",
    "OpenCLIPTextEncoder",
    "load_open_clip",
    "tiny_clip_model",
]
