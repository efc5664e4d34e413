"""Turning per-level distance maps into one anomaly map at the input size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def combine_levels(
    maps: Sequence[torch.Tensor], size: tuple[int, int], reduce: str = "sum", align_corners: bool = False
) -> torch.Tensor:
    """Upsample each [B,1,h,w] map bilinearly to ``size`` and add (``"sum"``) or multiply (``"prod"``) them."""
    out = None
    for m in maps:
        up = F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners)
        if out is None:
            out = up
        elif reduce == "sum":
            out = out + up
        elif reduce == "prod":
            out = out * up
        else:
            msg = f"reduce={reduce!r}: use 'sum' or 'prod'"
            raise ValueError(msg)
    if out is None:
        msg = "combine_levels needs at least one map"
        raise ValueError(msg)
    return out


def image_scores(anomaly_map: torch.Tensor) -> torch.Tensor:
    """Image score = max of the (smoothed) map, one per image."""
    return anomaly_map.amax(dim=(1, 2, 3))
