"""Student-teacher feature pyramid matching (``stfpm``, Wang et al. 2021) and ``stfpm-ae``.

``stfpm``: the student has the teacher's architecture, random init, trained to match the
teacher's L2-normalised features at three levels.

``stfpm-ae``: one small U-Net autoencoder per level reconstructs the student's features; it is
pretrained on teacher features (``pretrain_loss``), then trained jointly with
``α · Σ‖R − F_s‖² + Σ ½‖R̂ − F̂_t‖²`` where ``R = AE(F_s)``; the map compares ``R`` with the teacher.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.models.backbones import BACKBONES, build_backbone
from adkd.models.base import AnomalyModel
from adkd.models.components.maps import image_scores
from adkd.models.stfpm.anomaly_map import PyramidAnomalyMap
from adkd.models.stfpm.autoencoder import UNetAutoencoder, stages_for
from adkd.models.stfpm.loss import pyramid_loss, reconstruction_loss

log = logging.getLogger(__name__)


class STFPM(AnomalyModel):
    """Teacher (frozen) and student (same architecture, trainable, normal BatchNorm).

    Args:
        sigma: Gaussian σ of the map smoothing; 0 = none (the official STFPM has no blur).
        loss_scale: factor on Σ_c ‖t̂ − ŝ‖² in the loss; 1 = the official code, 0.5 = ½‖·‖² (1 − cos).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: str | os.PathLike = "imagenet",
        *,
        sigma: float = 4.0,
        loss_scale: float = 0.5,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            msg = f"backbone={backbone!r}: choose one of {', '.join(BACKBONES)}"
            raise ConfigError(msg)
        if sigma < 0:
            msg = f"sigma={sigma}: it must be >= 0 (0 = no smoothing)"
            raise ConfigError(msg)
        if not loss_scale > 0:
            msg = f"loss_scale={loss_scale}: it must be > 0 (1 = official STFPM, 0.5 = half)"
            raise ConfigError(msg)
        self.backbone_name = backbone
        self.loss_scale = float(loss_scale)
        self.teacher = build_backbone(backbone, weights, frozen=True)
        self.student = build_backbone(backbone, "none", frozen=False)
        self.anomaly_map = PyramidAnomalyMap(sigma)

    def forward(
        self, images: torch.Tensor, teacher: list[torch.Tensor] | None = None
    ) -> dict[str, Any] | tuple[torch.Tensor, torch.Tensor]:
        teacher = self.teacher(images) if teacher is None else teacher
        student = self.student(images)
        if self.training:
            return {"teacher": teacher, "student": student}
        amap = self.anomaly_map(teacher, student, images.shape[-2:])
        return amap, image_scores(amap)

    def loss(self, outputs: dict[str, Any]) -> torch.Tensor:
        return pyramid_loss(outputs["teacher"], outputs["student"], self.loss_scale)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"student": list(self.student.parameters())}


class STFPMAutoencoder(STFPM):
    """STFPM with a per-level U-Net autoencoder on the student's features.

    Args:
        alpha: weight of the reconstruction term ‖R − F_s‖² (a sum over C·H·W per image,
            hence the small default 1e-7).
        image_size: input size the autoencoders are sized for: each level gets as many
            2× poolings (at most ``ae_stages``) as keep its map ≥ 2×2; fewer are logged once.
        ae_stages: the most contracting stages per autoencoder (the seed paper's AE has 3:
            64/32/16 → 8/4/2 at 256 px).
    """

    has_autoencoder = True

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: str | os.PathLike = "imagenet",
        *,
        alpha: float = 1e-7,
        image_size: int = 256,
        ae_stages: int = 3,
        sigma: float = 4.0,
        loss_scale: float = 0.5,
    ) -> None:
        super().__init__(backbone, weights, sigma=sigma, loss_scale=loss_scale)
        if alpha < 0:
            msg = f"alpha={alpha}: it must be >= 0"
            raise ConfigError(msg)
        if image_size < 32:
            msg = f"image_size={image_size}: it must be at least 32"
            raise ConfigError(msg)
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
