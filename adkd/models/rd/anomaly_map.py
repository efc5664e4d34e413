"""Reverse distillation's anomaly map: Σ over levels of upsampled (1 − cosine along channels), blurred."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adkd.models.components.blur import GaussianBlur2d
from adkd.models.components.maps import combine_levels
from adkd.models.rd.loss import cosine_distance


def cosine_distance_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity along channels: [B,C,h,w] × 2 → [B,1,h,w]."""
    return cosine_distance(teacher, student, dim=1).unsqueeze(1)


class CosineAnomalyMap(nn.Module):
    """Per-level cosine distance, bilinear upsampling (align_corners=True, as RD4AD), sum, Gaussian σ."""

    def __init__(self, sigma: float = 4.0) -> None:
        super().__init__()
        self.blur = GaussianBlur2d(sigma)

    def forward(
        self, teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        maps = [cosine_distance_map(t, s) for t, s in zip(teacher, student, strict=True)]
        return self.blur(combine_levels(maps, size, reduce="sum", align_corners=True))
