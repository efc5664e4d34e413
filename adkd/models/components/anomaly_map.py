"""The anomaly map of the distillation models: per-level feature distance, upsampled, combined, blurred.

rd and mrkd add the levels' maps and upsample with ``align_corners=True`` (RD4AD's code); stfpm and
stfpm-ae multiply them and upsample with ``align_corners=False`` (STFPM's code). The distance is
the same for all: ½‖t̂ − ŝ‖² along channels of L2-normalised features, which equals 1 − cos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from adkd.models.components.blur import GaussianBlur2d

REDUCTIONS = ("sum", "prod")


def cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """1 − cos(a, b) along ``dim``, computed as ½‖â − b̂‖².

    Equal in exact arithmetic, but exactly 0 for equal inputs in float32, where
    ``1 - F.cosine_similarity`` leaves ~1e-5 on long flattened vectors.
    """
    return 0.5 * (F.normalize(a, dim=dim) - F.normalize(b, dim=dim)).pow(2).sum(dim=dim)


def distance_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Per-position ½‖t̂ − ŝ‖² over channels: [B,C,h,w] × 2 → [B,1,h,w]."""
    return cosine_distance(teacher, student, dim=1).unsqueeze(1)


def combine_levels(
    maps: Sequence[torch.Tensor], size: tuple[int, int], reduce: str = "sum", align_corners: bool = False
) -> torch.Tensor:
    """Upsample each [B,1,h,w] map bilinearly to ``size`` and add (``"sum"``) or multiply (``"prod"``) them."""
    if reduce not in REDUCTIONS:
        msg = f"reduce={reduce!r}: use 'sum' or 'prod'"
        raise ValueError(msg)
    out = None
    for m in maps:
        up = F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners)
        out = up if out is None else (out + up if reduce == "sum" else out * up)
    if out is None:
        msg = "combine_levels needs at least one map"
        raise ValueError(msg)
    return out


def image_scores(anomaly_map: torch.Tensor) -> torch.Tensor:
    """Image score = max of the (smoothed) map, one per image."""
    return anomaly_map.amax(dim=(1, 2, 3))


class AnomalyMap(nn.Module):
    """Per-level ``distance_map``, bilinear upsampling to the input size, sum or product over levels, Gaussian σ.

    Args:
        sigma: σ of the Gaussian smoothing; 0 = none.
        reduce: "sum" (rd, mrkd) or "prod" (stfpm, stfpm-ae) over levels.
        align_corners: of the bilinear upsampling (True in RD4AD's code, False in STFPM's).
    """

    def __init__(self, *, sigma: float, reduce: Literal["sum", "prod"], align_corners: bool) -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            msg = f"reduce={reduce!r}: use 'sum' or 'prod'"
            raise ValueError(msg)
        self.reduce = reduce
        self.align_corners = align_corners
        self.blur = GaussianBlur2d(sigma)

    def forward(
        self, teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        maps = [distance_map(t, s) for t, s in zip(teacher, student, strict=True)]
        return self.blur(combine_levels(maps, size, reduce=self.reduce, align_corners=self.align_corners))
