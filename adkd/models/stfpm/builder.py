"""``stfpm()``, the public builder, apart from the torch code (why: ``adkd/models/README.md``)."""

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
