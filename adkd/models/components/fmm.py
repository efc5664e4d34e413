"""Feature mask generation (FMM): mask student features at random positions, regenerate them.

After MGD (Yang et al., ECCV 2022): a spatial mask shared across channels, each position
dropped with probability λ, drawn fresh on every training forward; a generation block
conv3×3 → ReLU → conv3×3 (channels kept, with biases, no norm) rebuilds the features.
"""

from __future__ import annotations

import torch
from torch import nn


class RandomFeatureMask(nn.Module):
    """Zero each spatial position (all channels) with probability ``rate`` in training; identity in eval."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            msg = f"mask_rate={rate}: it must be in [0, 1)"
            raise ValueError(msg)
        self.rate = rate

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh keep-mask [B,1,H,W] of ones and zeros, zeros at a fraction ≈ rate of positions."""
        b, _, h, w = x.shape
        return (torch.rand(b, 1, h, w, device=x.device) >= self.rate).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return x * self.draw(x)


class FeatureGenerator(nn.Module):
    """MGD's generation block: conv3×3 → ReLU → conv3×3, same channels in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class FeatureMaskGeneration(nn.Module):
    """Mask (training only) then regenerate one level's features."""

    def __init__(self, channels: int, rate: float) -> None:
        super().__init__()
        self.mask = RandomFeatureMask(rate)
        self.generator = FeatureGenerator(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.mask(x))
