"""The fast tower of the video encoders: torchvision video backbones, headless, with their weights.

:data:`VIDEO_BACKBONES` says what differs between backbones (builder, weight enum, classifier attribute,
frames, rate, crop / resize, normalisation); :func:`build_backbone` builds one and loads its weights from the
torch hub cache (a torchvision weight enum name), a local file or folder, or a seeded random init;
:func:`load_backbone_state_dict` checks a checkpoint against the architecture (classifier keys and wrapper
prefixes ignored).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmrec.encoders.video_tiny import NarrowVideoResNet
from mmrec.encoders.weights import (
    MissingWeightsError,
    find_checkpoint,
    hub_offline,
    load_state_dict_file,
    missing_weights_message,
    parse_weights,
    seeded,
)

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class VideoBackbone:
    """A torchvision video backbone and its defaults.

    Attributes:
        builder: name of the ``torchvision.models.video`` function (``""`` for the tiny test network).
        weights_enum: name of its weight enum (``R2Plus1D_18_Weights``).
        head: attribute holding the classifier, replaced by ``Identity``.
        frames: default number of fast frames.
        fps: default fast sampling rate.
        crop: crop size; resize: resize size (one value: shorter side; two: exact ``(h, w)``).
        mean, std: input normalisation.
    """

    builder: str
    weights_enum: str
    head: str
    frames: int = 16
    fps: float | None = 15.0
    crop: int = 112
    resize: tuple[int, ...] = (128, 171)
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD


VIDEO_BACKBONES: dict[str, VideoBackbone] = {
    "r2plus1d_18": VideoBackbone("r2plus1d_18", "R2Plus1D_18_Weights", "fc"),
    "r3d_18": VideoBackbone("r3d_18", "R3D_18_Weights", "fc"),
    "mc3_18": VideoBackbone("mc3_18", "MC3_18_Weights", "fc"),
    "mvit_v2_s": VideoBackbone(
        "mvit_v2_s", "MViT_V2_S_Weights", "head", 16, 7.5, 224, (256,), (0.45,) * 3, (0.225,) * 3
    ),
    "mvit_v1_b": VideoBackbone(
        "mvit_v1_b", "MViT_V1_B_Weights", "head", 16, 7.5, 224, (256,), (0.45,) * 3, (0.225,) * 3
    ),
    "s3d": VideoBackbone("s3d", "S3D_Weights", "classifier", 16, 15.0, 224, (256, 256)),
    "swin3d_t": VideoBackbone(
        "swin3d_t",
        "Swin3D_T_Weights",
        "head",
        16,
        15.0,
        224,
        (256,),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    ),
    "tiny_r3d": VideoBackbone("", "", "fc", 8, None, 32, (36, 48)),
}


def _head_in_features(head: nn.Module) -> int:
    layers = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv3d))]
    if not layers:
        raise ValueError(f"cannot find the classifier layer in {head}")
    last = layers[-1]
    return int(last.in_features if isinstance(last, nn.Linear) else last.in_channels)


def _weights_enum(arch: VideoBackbone, tag: str) -> Any:
    from torchvision.models import get_weight

    name = tag if "." in tag else f"{arch.weights_enum}.{tag}"
    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError) as e:
        raise MissingWeightsError(
            missing_weights_message(
                tag,
                family=f"torchvision {arch.builder}",
                hub_example=f"{arch.weights_enum}.KINETICS400_V1",
                detail=f"not a torchvision weight enum name ({e})",
            )
        ) from e


def build_backbone(
    backbone: str, weights: str | os.PathLike[str] | None, seed: int = 0
) -> tuple[nn.Module, int, str]:
    """Build a headless torchvision video backbone and load its weights.

    Args:
        backbone: a key of :data:`VIDEO_BACKBONES`.
        weights: hub tag (weight enum name), file, directory or ``random`` (``None``: ``DEFAULT`` enum).
        seed: seed of a random init.

    Returns:
        ``(model, feature_dim, weights_identity)``; the model maps ``(B, 3, T, H, W)`` to ``(B, D)``.

    Raises:
        MissingWeightsError: the weights cannot be found (offline hub, missing file); the message names the
            three ways to supply them.
        ValueError: a checkpoint that does not fit the architecture.
    """
    if backbone not in VIDEO_BACKBONES:
        raise ValueError(f"unknown video backbone {backbone!r}; choose one of {sorted(VIDEO_BACKBONES)}")
    arch = VIDEO_BACKBONES[backbone]
    if weights is None:
        if not arch.weights_enum:
            raise MissingWeightsError(
                missing_weights_message(
                    "None",
                    family=f"video backbone {backbone}",
                    hub_example="random",
                    detail="the tiny test backbone has no pretrained weights",
                )
            )
        weights = f"{arch.weights_enum}.DEFAULT"
    spec = parse_weights(weights)

    def make() -> nn.Module:
        if not arch.builder:
            return NarrowVideoResNet()
        import torchvision.models.video as tvv

        return getattr(tvv, arch.builder)(weights=None)

    state: dict[str, torch.Tensor] | None = None
    source = spec.value
    if spec.kind == "hub":  # resolve the weights before building (fail fast, offline)
        if not arch.weights_enum:
            raise MissingWeightsError(
                missing_weights_message(
                    spec.value, family="tiny_r3d", hub_example="random", detail="no hub weights"
                )
            )
        enum = _weights_enum(arch, spec.value)
        state = _hub_state_dict(enum, arch)
        identity, source = f"hub:torchvision/{type(enum).__name__}.{enum.name}", str(enum)
    elif spec.kind in ("file", "dir"):
        path: Path | None = Path(spec.value)
        if spec.kind == "dir":
            path = find_checkpoint(spec.value)
            if path is None:
                raise MissingWeightsError(
                    missing_weights_message(
                        spec.value,
                        family=f"video backbone {backbone}",
                        hub_example=f"{arch.weights_enum or 'R2Plus1D_18_Weights'}.KINETICS400_V1",
                        detail="the folder holds no single model.safetensors / *.pth / *.pt / *.bin checkpoint",
                    )
                )
        state, source = load_state_dict_file(path), str(path)
        identity = spec.identity(seed)
    else:
        identity = spec.identity(seed)
    with seeded(seed):
        model = make()
    dim = _head_in_features(getattr(model, arch.head))
    if state is not None:
        load_backbone_state_dict(model, state, arch.head, source)
    setattr(model, arch.head, nn.Identity())
    return model, dim, identity


def _hub_state_dict(enum: Any, arch: VideoBackbone) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if not cached.is_file() and hub_offline():
        raise MissingWeightsError(
            missing_weights_message(
                f"{type(enum).__name__}.{enum.name}",
                family=f"torchvision {arch.builder}",
                hub_example=f"{arch.weights_enum}.KINETICS400_V1",
                detail=f"hubs are offline and {cached} is not in the torch hub cache",
            )
        )
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise MissingWeightsError(
            missing_weights_message(
                f"{type(enum).__name__}.{enum.name}",
                family=f"torchvision {arch.builder}",
                hub_example=f"{arch.weights_enum}.KINETICS400_V1",
                detail=f"download failed: {e}",
            )
        ) from e


def load_backbone_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], head: str, source: str
) -> None:
    """Load a backbone checkpoint, ignoring its classifier (``<head>.*``) and wrapper prefixes.

    Args:
        model: the backbone with its head still in place.
        state_dict: the checkpoint's tensors.
        head: name of the classifier attribute (``fc``, ``head``, ``classifier``).
        source: where the tensors come from, for error messages.

    Raises:
        ValueError: keys or shapes do not match the architecture.
    """
    sd = dict(state_dict)
    for prefix in ("module.", "backbone.", "model.", "fast."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    body = {k: v for k, v in sd.items() if not k.startswith(f"{head}.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{head}.")}
    missing = sorted(set(expected) - set(body))
    unexpected = sorted(set(body) - set(expected))
    wrong = [k for k in set(body) & set(expected) if body[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the checkpoint {source} does not fit {type(model).__name__}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, shape mismatches {wrong[:3]}. Pass the backbone it was trained for (backbone=...)."
        )
    model.load_state_dict(body, strict=False)
