"""``rd()``, the public builder, apart from the torch code (why: ``adkd/models/README.md``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adkd.models.rd.torch_model import ReverseDistillation


def rd(
    backbone: str = "wide_resnet50_2",
    weights: str | os.PathLike = "imagenet",
    *,
    levels: Sequence[int] = (1, 2, 3),
    loss_mode: str = "flatten",
    bottleneck_width: int | None = None,
    sigma: float = 4.0,
) -> ReverseDistillation:
    """Reverse distillation as RD4AD's code has it; the options are ``ReverseDistillation``'s."""
    from adkd.models.rd.torch_model import ReverseDistillation

    return ReverseDistillation(
        backbone, weights, levels=levels, loss_mode=loss_mode, bottleneck_width=bottleneck_width, sigma=sigma
    )
