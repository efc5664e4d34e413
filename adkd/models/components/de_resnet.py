"""De-ResNet decoder blocks and the mirrored decoder of reverse distillation (Deng & Li, CVPR 2022).

The blocks mirror torchvision's BasicBlock / Bottleneck with the stride-2 3×3 conv replaced by a
2×2 transposed conv of stride 2 (RD4AD's ``de_resnet.py``). ``MirrorDecoder`` stacks three
stages from the deepest level back to the shallowest; with RD4AD's blocks per stage it is
exactly RD4AD's decoder for the ResNet family, and for other teachers (MobileNetV2) it is the
same construction driven by the teacher's per-level channels and strides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _up(in_ch: int, out_ch: int, factor: int, groups: int = 1) -> nn.Module:
    """Upsample by ``factor`` with a k=s transposed conv, or a 3×3 conv when the resolution is kept."""
    if factor == 1:
        return nn.Conv2d(in_ch, out_ch, 3, padding=1, groups=groups, bias=False)
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=factor, stride=factor, groups=groups, bias=False)


class DeBasicBlock(nn.Module):
    """BasicBlock whose first conv upsamples (transposed conv) when ``factor`` > 1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, factor: int = 1, upsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _up(inplanes, planes, factor)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DeBottleneck(nn.Module):
    """Bottleneck (1×1, up-or-3×3, 1×1) whose middle conv upsamples when ``factor`` > 1."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        factor: int = 1,
        upsample: nn.Module | None = None,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0))
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _up(width, width, factor)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class MirrorDecoder(nn.Module):
    """Three de-ResNet stages from the bottleneck back to the teacher's levels.

    Args:
        block: ``DeBasicBlock`` or ``DeBottleneck``.
        inplanes: channels coming out of the bottleneck.
        in_stride: stride of the bottleneck output.
        channels: the teacher's channels per level, shallow to deep.
        strides: the teacher's strides per level, shallow to deep.
        blocks: blocks per stage, deep to shallow (RD4AD: [3, 4, 6] for ResNet-50, [2, 2, 2] for ResNet-18).
        width_per_group: bottleneck width per group (128 for WideResNet-50-2).

    ``forward`` returns the reconstructed features shallow to deep, like the teacher.
    """

    def __init__(
        self,
        block: type[DeBasicBlock] | type[DeBottleneck],
        inplanes: int,
        in_stride: int,
        channels: Sequence[int],
        strides: Sequence[int],
        blocks: Sequence[int],
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        self.inplanes = inplanes
        stages = []
        prev_stride = in_stride
        for out_ch, stride, n in zip(reversed(channels), reversed(strides), blocks):
            if out_ch % block.expansion:
                msg = f"decoder: level channels {out_ch} not divisible by the block expansion {block.expansion}"
                raise ValueError(msg)
            stages.append(self._make_stage(block, out_ch // block.expansion, n, prev_stride // stride, width_per_group))
            prev_stride = stride
        self.layer1, self.layer2, self.layer3 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_stage(
        self, block: type[nn.Module], planes: int, n: int, factor: int, width_per_group: int
    ) -> nn.Sequential:
        out_ch = planes * block.expansion
        upsample = None
        if factor != 1 or self.inplanes != out_ch:
            upsample = nn.Sequential(_up(self.inplanes, out_ch, factor), nn.BatchNorm2d(out_ch))
        extra = {"width_per_group": width_per_group} if block is DeBottleneck else {}
        layers = [block(self.inplanes, planes, factor, upsample, **extra)]
        self.inplanes = out_ch
        layers += [block(out_ch, planes, 1, None, **extra) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.layer1(x)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]
