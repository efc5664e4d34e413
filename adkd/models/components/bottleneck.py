"""Reverse distillation's one-class bottleneck: multi-scale fusion (MSFF) + one-class embedding (OCE).

As in RD4AD's ``BN_layer``: each shallower level is brought to the deepest level's stride by
stride-2 conv3×3 + BN + ReLU steps (channels doubling, the last step landing on the deepest
level's channels) and the maps are concatenated. Masked RD (§3.3) then makes the compact fused
map with a 1×1 conv + BN + ReLU (``fusion_conv=True``; RD4AD has no such stage). An optional
attention module re-weights the fused map (SCSAtt in mrkd), and a stack of residual blocks with
stride 2 (torchvision's Bottleneck, or BasicBlock for small teachers) embeds it into a compact code
of twice the deepest level's channels. RD4AD's unused ``conv4``/``bn4`` are not built.

SCSAtt sits after the 1×1 fusion stage, on its output: the attention is meant to weigh the fused
multi-scale representation (§3.4 applies it to the MSFF's output), and after the 1×1 conv + BN the
channels mix all levels at a common, batch-normalised scale, which is what SCConv's GroupNorm gate and
SimAM's energy (with its absolute λ = 1e-4) assume; before it, the concatenation holds blocks of
different levels with different scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class OneClassBottleneck(nn.Module):
    """MSFF (+ 1×1 fusion) + (attention) + OCE.

    Args:
        channels: teacher channels per level, shallow to deep.
        strides: teacher strides per level, shallow to deep (powers of two apart).
        block: ``Bottleneck`` (ResNet-50 family) or ``BasicBlock``.
        blocks: number of residual blocks in the OCE (RD4AD: 3 for Bottleneck, 2 for BasicBlock).
        width_per_group: Bottleneck inner width per group; 128 reproduces RD4AD's WideResNet-50-2.
        attention: module applied to the fused map (keeps its shape), or None.
        levels: which levels (1 = shallowest) are fused; each is brought to the deepest level's
            stride and channels, so the code's shape does not depend on the choice.
        fusion_conv: the 1×1 conv + BN + ReLU after the concatenation (masked RD §3.3), keeping
            the concatenation's width so the OCE is RD's whatever the switch.
    """

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[int],
        block: type[Bottleneck] | type[BasicBlock] = Bottleneck,
        blocks: int = 3,
        width_per_group: int = 64,
        attention: nn.Module | None = None,
        levels: Sequence[int] | None = None,
        fusion_conv: bool = False,
    ) -> None:
        super().__init__()
        deep_ch, deep_stride = channels[-1], strides[-1]
        self.levels = tuple(levels) if levels is not None else tuple(range(1, len(channels) + 1))
        fusers = []
        for level in self.levels:
            ch, stride = channels[level - 1], strides[level - 1]
            steps = int(math.log2(deep_stride // stride))
            if 2**steps * stride != deep_stride:
                msg = f"bottleneck: level stride {stride} is not a power-of-two fraction of {deep_stride}"
                raise ValueError(msg)
            layers, c = [], ch
            for i in range(steps):
                out = deep_ch if i == steps - 1 else 2 * c
                layers += _conv_bn_relu(c, out)
                c = out
            fusers.append(nn.Sequential(*layers))  # empty (identity) for the deepest level
        self.fuse = nn.ModuleList(fusers)
        self.fused_channels = deep_ch * len(self.levels)
        self.fusion = (
            nn.Sequential(
                nn.Conv2d(self.fused_channels, self.fused_channels, 1, bias=False),
                nn.BatchNorm2d(self.fused_channels),
                nn.ReLU(inplace=True),
            )
            if fusion_conv
            else None
        )
        self.attention = attention if attention is not None else nn.Identity()
        self.out_channels = 2 * deep_ch
        self.out_stride = 2 * deep_stride
        planes = self.out_channels // block.expansion
        downsample = nn.Sequential(
            nn.Conv2d(self.fused_channels, self.out_channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(self.out_channels),
        )
        layers = [block(self.fused_channels, planes, 2, downsample, base_width=width_per_group)]
        layers += [block(self.out_channels, planes, base_width=width_per_group) for _ in range(1, blocks)]
        self.oce = nn.Sequential(*layers)
        # RD4AD's init for its own convs; the attention module keeps its own.
        for part in (self.fuse, self.fusion, self.oce):
            for m in part.modules() if part is not None else ():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([f(features[i - 1]) for f, i in zip(self.fuse, self.levels)], dim=1)
        if self.fusion is not None:
            fused = self.fusion(fused)
        return self.oce(self.attention(fused))
