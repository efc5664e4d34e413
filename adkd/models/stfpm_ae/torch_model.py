"""``stfpm-ae``: STFPM with one small U-Net autoencoder per level on the student's features.

The autoencoders are pretrained on teacher features (``pretrain_loss``), then trained jointly with
``α · Σ‖R − F_s‖² + Σ ½‖R̂ − F̂_t‖²`` where ``R = AE(F_s)``; the map compares ``R`` with the teacher.
The phases are the model's ``ae_schedule`` (``adkd.models.stfpm_ae.training``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.models.components.anomaly_map import image_scores
from adkd.models.stfpm.loss import pyramid_loss
from adkd.models.stfpm.torch_model import STFPM
from adkd.models.stfpm_ae.autoencoder import UNetAutoencoder, stages_for
from adkd.models.stfpm_ae.loss import reconstruction_loss
from adkd.models.stfpm_ae.training import AutoencoderSchedule

log = logging.getLogger(__name__)


class STFPMAutoencoder(STFPM):
    """STFPM with a per-level U-Net autoencoder on the student's features.

    Args (besides ``STFPM``'s):
        alpha: weight of the reconstruction term ‖R − F_s‖² (a sum over C·H·W per image,
            hence the small default 1e-7).
        image_size: input size the autoencoders are sized for: each level gets as many
            2× poolings (at most ``ae_stages``) as keep its map ≥ 2×2; fewer are logged once.
        ae_stages: the most contracting stages per autoencoder (the seed paper's AE has 3:
            64/32/16 → 8/4/2 at 256 px).
        ae_pretrain_epochs, ae_pretrain_lr, ae_lr, ae_freeze_epochs: the ``AutoencoderSchedule``.
    """

    model_name = "stfpm-ae"

    def __init__(
        self,
        backbone: str,
        weights: str | os.PathLike,
        *,
        alpha: float,
        image_size: int,
        ae_stages: int,
        sigma: float,
        loss_scale: float,
        ae_pretrain_epochs: int,
        ae_pretrain_lr: float,
        ae_lr: float | None,
        ae_freeze_epochs: int,
    ) -> None:
        super().__init__(backbone, weights, sigma=sigma, loss_scale=loss_scale)
        if alpha < 0:
            msg = f"alpha={alpha}: it must be >= 0"
            raise ConfigError(msg)
        if image_size < 32:
            msg = f"image_size={image_size}: it must be at least 32"
            raise ConfigError(msg)
        self.ae_schedule = _schedule(ae_pretrain_epochs, ae_pretrain_lr, ae_lr, ae_freeze_epochs)
        self.alpha = float(alpha)
        sizes = [image_size // s for s in self.teacher.strides]
        stages = [stages_for(size, max_stages=ae_stages) for size in sizes]
        if any(n < ae_stages for n in stages):
            log.info(
                "stfpm-ae: %d px gives level maps %s, too small for %d U-Net stages each; using %s stages",
                image_size,
                "/".join(map(str, sizes)),
                ae_stages,
                "/".join(map(str, stages)),
            )
        self.ae_stages = tuple(stages)
        self.autoencoders = nn.ModuleList(UNetAutoencoder(c, n) for c, n in zip(self.teacher.channels, stages))

    def forward(
        self, images: torch.Tensor, teacher: list[torch.Tensor] | None = None
    ) -> dict[str, Any] | tuple[torch.Tensor, torch.Tensor]:
        teacher = self.teacher(images) if teacher is None else teacher
        student = self.student(images)
        recon = [ae(s) for ae, s in zip(self.autoencoders, student)]
        if self.training:
            return {"teacher": teacher, "student": student, "recon": recon}
        amap = self.anomaly_map(teacher, recon, images.shape[-2:])
        return amap, image_scores(amap)

    def loss(self, outputs: dict[str, Any]) -> torch.Tensor:
        similarity = pyramid_loss(outputs["teacher"], outputs["recon"], self.loss_scale)
        if self.alpha == 0:
            return similarity
        return self.alpha * reconstruction_loss(outputs["recon"], outputs["student"]) + similarity

    def pretrain_loss(self, images: torch.Tensor, teacher: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Σ over levels of MSE(AE(F_t), F_t): autoencoder pretraining on teacher features."""
        teacher = self.teacher(images) if teacher is None else teacher
        total = images.new_zeros(())
        for ae, t in zip(self.autoencoders, teacher):
            total = total + nn.functional.mse_loss(ae(t), t)
        return total

    def freeze_autoencoder(self, flag: bool = True) -> None:
        """Stop (True) or resume (False) gradient updates of the autoencoders."""
        self.autoencoders.requires_grad_(not flag)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"student": list(self.student.parameters()), "autoencoder": list(self.autoencoders.parameters())}


def _schedule(pretrain_epochs: int, pretrain_lr: float, lr: float | None, freeze_epochs: int) -> AutoencoderSchedule:
    for name, value in (("ae_pretrain_epochs", pretrain_epochs), ("ae_freeze_epochs", freeze_epochs)):
        whole = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
        if not whole or value < 0:
            msg = f"{name}={value!r}: it must be a whole number >= 0"
            raise ConfigError(msg)
    for name, value in (("ae_pretrain_lr", pretrain_lr), ("ae_lr", lr)):
        if value is not None and not value > 0:
            hint = " (None = the optimiser's)" if name == "ae_lr" else ""
            msg = f"{name}={value}: a learning rate must be > 0{hint}"
            raise ConfigError(msg)
    return AutoencoderSchedule(
        pretrain_epochs=int(pretrain_epochs),
        pretrain_lr=float(pretrain_lr),
        lr=None if lr is None else float(lr),
        freeze_epochs=int(freeze_epochs),
    )
