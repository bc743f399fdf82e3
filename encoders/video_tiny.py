"""The tiny fast-tower network of the ``video/tiny-*`` test encoders: a narrow torchvision ``VideoResNet``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple, VideoResNet

#: Widths of the tiny test VideoResNet (one BasicBlock per stage).
TINY_WIDTHS = (8, 16, 32, 64)


class NarrowVideoResNet(VideoResNet):
    """A torchvision ``VideoResNet`` (R3D blocks, one per stage) with configurable widths, for tests.

    Same key layout as ``r3d_18`` (``stem``, ``layer1..4``, ``fc``) with fewer channels.

    Args:
        widths: channels of the stem / stages 1-4.
        num_classes: outputs of the ``fc`` head.

    Example:
        >>> import torch
        >>> NarrowVideoResNet()(torch.zeros(1, 3, 4, 32, 32)).shape
        torch.Size([1, 10])
    """

    def __init__(self, widths: Sequence[int] = TINY_WIDTHS, num_classes: int = 10) -> None:
        nn.Module.__init__(self)
        self.inplanes = widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = self._make_layer(BasicBlock, Conv3DSimple, widths[0], 1, stride=1)
        self.layer2 = self._make_layer(BasicBlock, Conv3DSimple, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, Conv3DSimple, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, Conv3DSimple, widths[3], 1, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
