"""Reverse distillation's cosine loss between teacher and student features."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adkd.models.components.anomaly_map import cosine_distance
from adkd.models.components.layout import NHWC, channels_last_only

LOSS_MODES = ("flatten", "pixel")


def cosine_loss(
    teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], mode: str = "flatten"
) -> torch.Tensor:
    """Σ over levels of 1 − cosine similarity, averaged over the batch.

    ``"flatten"`` (RD4AD's code): one cosine per image between the flattened C·H·W maps.
    ``"pixel"`` (the papers' formula): a cosine along channels per position, averaged over positions.
    """
    if mode not in LOSS_MODES:
        msg = f"loss_mode={mode!r}: use one of {', '.join(LOSS_MODES)}"
        raise ValueError(msg)
    total = teacher[0].new_zeros(())
    for t, s in zip(teacher, student, strict=True):
        if mode == "flatten":
            # One cosine per image over all C·H·W values, whatever order both are read in: channels-last maps
            # are read in memory order (a view) instead of being copied into C·H·W order, forward and backward.
            order = NHWC if channels_last_only(s) else (0, 1, 2, 3)
            t, s = t.permute(order).flatten(1), s.permute(order).flatten(1)
        total = total + cosine_distance(t, s, dim=1).mean()
    return total
