"""``stfpm_ae()``, the public builder, apart from the torch code (why: ``adkd/models/README.md``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adkd.models.stfpm_ae.torch_model import STFPMAutoencoder


def stfpm_ae(
    backbone: str = "resnet18",
    weights: str | os.PathLike = "imagenet",
    *,
    alpha: float = 1e-7,
    image_size: int = 256,
    ae_stages: int = 3,
    sigma: float = 4.0,
    loss_scale: float = 0.5,
    ae_pretrain_epochs: int = 0,
    ae_pretrain_lr: float = 1e-3,
    ae_lr: float | None = None,
    ae_freeze_epochs: int = 0,
) -> STFPMAutoencoder:
    """STFPM + per-level U-Net autoencoder (the seed paper's three stages); no autoencoder phases by default.

    The options are ``STFPMAutoencoder``'s; the ``paper`` preset sets the seed paper's phases
    (100 pretraining epochs, the autoencoder frozen for the first 5 and 10× slower after).
    """
    from adkd.models.stfpm_ae.torch_model import STFPMAutoencoder

    return STFPMAutoencoder(
        backbone,
        weights,
        alpha=alpha,
        image_size=image_size,
        ae_stages=ae_stages,
        sigma=sigma,
        loss_scale=loss_scale,
        ae_pretrain_epochs=ae_pretrain_epochs,
        ae_pretrain_lr=ae_pretrain_lr,
        ae_lr=ae_lr,
        ae_freeze_epochs=ae_freeze_epochs,
    )
