"""STFPM's anomaly map: product over levels of upsampled ½‖t̂ − ŝ‖², Gaussian-smoothed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adkd.models.components.blur import GaussianBlur2d
from adkd.models.components.maps import combine_levels
from adkd.models.stfpm.loss import normalized_sq_distance


class PyramidAnomalyMap(nn.Module):
    """Per-level ½‖t̂ − ŝ‖², bilinear upsampling, product over levels, Gaussian σ."""

    def __init__(self, sigma: float = 4.0) -> None:
        super().__init__()
        self.blur = GaussianBlur2d(sigma)

    def forward(
        self, teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        maps = [normalized_sq_distance(t, s) for t, s in zip(teacher, student, strict=True)]
        return self.blur(combine_levels(maps, size, reduce="prod", align_corners=False))
