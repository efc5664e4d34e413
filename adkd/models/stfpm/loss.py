"""STFPM's feature-pyramid matching loss on channel-L2-normalised features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalized_sq_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """½‖t̂ − ŝ‖² over channels of L2-normalised features: [B,C,h,w] × 2 → [B,1,h,w]."""
    t, s = F.normalize(teacher, dim=1), F.normalize(student, dim=1)
    return 0.5 * (t - s).pow(2).sum(dim=1, keepdim=True)


def pyramid_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], scale: float = 0.5) -> torch.Tensor:
    """Σ over levels of the mean (over batch and positions) of ``scale · ‖t̂ − ŝ‖²``.

    ``scale=1`` is the official STFPM code (Σ_c over channels, mean over b, h, w); 0.5 halves it
    (½‖t̂ − ŝ‖² = 1 − cos), which with SGD halves the effective learning rate.
    """
    total = teacher[0].new_zeros(())
    for t, s in zip(teacher, student, strict=True):
        total = total + normalized_sq_distance(t, s).mean()
    return total * (2.0 * scale)


def reconstruction_loss(recon: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over levels of ‖R − F‖², summed over channels and positions, averaged over the batch."""
    total = recon[0].new_zeros(())
    for r, f in zip(recon, target, strict=True):
        total = total + (r - f).pow(2).sum() / r.shape[0]
    return total
