"""Gaussian smoothing of anomaly maps as two fixed 1-D convolutions (exports to ONNX)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ``int(truncate * sigma + 0.5)`` (scipy's rule: σ=4 → 33 taps)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


class GaussianBlur2d(nn.Module):
    """Blur single-channel maps [B,1,H,W] with a separable Gaussian and reflect padding; σ = 0 is the identity.

    Reflect padding (``d c b | a b c d``) equals scipy's ``mode="mirror"``; it needs
    H and W larger than the radius (16 for σ=4).
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        if sigma < 0:
            msg = f"sigma={sigma}: it must be >= 0 (0 = no smoothing)"
            raise ValueError(msg)
        k = gaussian_kernel1d(sigma, truncate) if sigma > 0 else torch.ones(1)
        self.radius = (k.numel() - 1) // 2
        self.sigma = sigma
        self.register_buffer("kernel_h", k.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("kernel_v", k.view(1, 1, -1, 1), persistent=False)

    @property
    def taps(self) -> int:
        return 2 * self.radius + 1

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return maps
        r = self.radius
        x = F.pad(maps, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, self.kernel_h.to(x.dtype))
        return F.conv2d(x, self.kernel_v.to(x.dtype))
