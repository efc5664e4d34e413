"""The small per-level U-Net autoencoder of ``stfpm-ae``.

Contracting stages of two conv3×3 + ReLU then a 2×2 max-pool, a bottleneck block of two
conv3×3 + ReLU keeping the channels, an expanding path of 2×2 transposed convs each followed
by concatenation with the matching skip (no conv after it), and a final 1×1 conv back to the
level's channels. Channels stay at the level's width throughout.

Pooling uses ``ceil_mode`` and the upsampled map is cropped to its skip, so odd sizes work.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def stages_for(size: int, max_stages: int = 3, min_size: int = 2) -> int:
    """How many 2× poolings a ``size``×``size`` map takes while staying ≥ ``min_size`` (capped)."""
    if size < min_size:
        return 0
    return max(0, min(max_stages, math.floor(math.log2(size / min_size))))


class UNetAutoencoder(nn.Module):
    """U-Net on a [B,C,h,w] feature map with ``stages`` contracting/expanding steps."""

    def __init__(self, channels: int, stages: int = 2) -> None:
        super().__init__()
        if stages < 0:
            msg = f"stages={stages}: it must be >= 0"
            raise ValueError(msg)
        self.stages = stages
        self.down = nn.ModuleList(_double_conv(channels, channels) for _ in range(stages))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bottom = _double_conv(channels, channels)
        # Stage k up-conv sees the bottleneck (C) or the previous concat (2C).
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels if k == 0 else 2 * channels, channels, 2, stride=2) for k in range(stages)
        )
        self.head = nn.Conv2d(2 * channels if stages else channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x)[..., : skip.shape[-2], : skip.shape[-1]]
            x = torch.cat([x, skip], dim=1)
        return self.head(x)
