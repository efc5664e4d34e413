"""``stfpm()``, the public builder: its keyword arguments are the model's options and their defaults (the one
place they live). A module of its own, apart from the torch code, so the zoo reads the defaults without importing
torch (a Ray driver checks a run's settings before any worker starts).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adkd.models.stfpm.torch_model import STFPM


def stfpm(
    backbone: str = "resnet18", weights: str | os.PathLike = "imagenet", *, sigma: float = 4.0, loss_scale: float = 0.5
) -> STFPM:
    """STFPM with a σ = 4 map blur and the ½ loss (the ``paper`` preset sets the official 0 and 1)."""
    from adkd.models.stfpm.torch_model import STFPM

    return STFPM(backbone, weights, sigma=sigma, loss_scale=loss_scale)
