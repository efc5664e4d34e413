"""SimAM: parameter-free attention from an energy function (Yang et al., ICML 2021)."""

from __future__ import annotations

import torch
from torch import nn


class SimAM(nn.Module):
    """Re-weight each activation by sigmoid of its closed-form inverse energy.

    Per sample and channel, with n = H·W − 1 and d = (x − mean)²:
    ``y = d / (4 (Σd / n + λ)) + 0.5``, output ``x · sigmoid(y)``; λ = 1e-4.
    """

    def __init__(self, lam: float = 1e-4) -> None:
        super().__init__()
        self.lam = lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.lam)) + 0.5
        return x * torch.sigmoid(y)
