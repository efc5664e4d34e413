"""STFPM's feature-pyramid matching loss on channel-L2-normalised features."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adkd.models.components.anomaly_map import distance_map


def pyramid_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], scale: float = 0.5) -> torch.Tensor:
    """Σ over levels of the mean (over batch and positions) of ``scale · ‖t̂ − ŝ‖²``.

    ``scale=1`` is the official STFPM code (Σ_c over channels, mean over b, h, w); 0.5 halves it
    (½‖t̂ − ŝ‖² = 1 − cos), which with SGD halves the effective learning rate.
    """
    total = teacher[0].new_zeros(())
    for t, s in zip(teacher, student, strict=True):
        total = total + distance_map(t, s).mean()
    return total * (2.0 * scale)
