"""stfpm-ae's reconstruction term."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def reconstruction_loss(recon: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over levels of ‖R − F‖², summed over channels and positions, averaged over the batch."""
    total = recon[0].new_zeros(())
    for r, f in zip(recon, target, strict=True):
        total = total + (r - f).pow(2).sum() / r.shape[0]
    return total
