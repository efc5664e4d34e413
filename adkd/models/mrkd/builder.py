"""``mrkd()``, the public builder, apart from the torch code (why: ``adkd/models/README.md``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adkd.models.mrkd.torch_model import MaskedReverseDistillation


def mrkd(
    backbone: str = "wide_resnet50_2",
    weights: str | os.PathLike = "imagenet",
    *,
    levels: Sequence[int] = (1, 2, 3),
    loss: str = "paper",
    loss_mode: str = "flatten",
    bottleneck_width: int | None = None,
    sigma: float = 4.0,
    fusion_conv: bool = True,
    use_scconv: bool = True,
    scconv_fusion: str = "per_channel",
    use_simam: bool = True,
    use_fmm: bool = True,
    alpha: float = 1.0,
    mask_rate: float = 0.5,
    map_source: str | None = None,
) -> MaskedReverseDistillation:
    """Masked RD as the seed paper describes it (every addition on, §3.8 loss, λ = 0.5).

    The options are ``MaskedReverseDistillation``'s; switching the additions off (``fusion_conv``,
    ``use_scconv``, ``use_simam``, ``use_fmm``) re-runs the paper's ablations.
    """
    from adkd.models.mrkd.torch_model import MaskedReverseDistillation

    return MaskedReverseDistillation(
        backbone,
        weights,
        levels=levels,
        loss=loss,
        loss_mode=loss_mode,
        bottleneck_width=bottleneck_width,
        sigma=sigma,
        fusion_conv=fusion_conv,
        use_scconv=use_scconv,
        scconv_fusion=scconv_fusion,
        use_simam=use_simam,
        use_fmm=use_fmm,
        alpha=alpha,
        mask_rate=mask_rate,
        map_source=map_source,
    )
