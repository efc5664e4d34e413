"""Student-teacher feature pyramid matching (``stfpm``, Wang et al. 2021).

The student has the teacher's architecture, random init, trained to match the teacher's
L2-normalised features at three levels.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.models.backbones import BACKBONES, build_backbone
from adkd.models.base import AnomalyModel
from adkd.models.components.anomaly_map import AnomalyMap, image_scores
from adkd.models.stfpm.loss import pyramid_loss


class STFPM(AnomalyModel):
    """Teacher (frozen) and student (same architecture, trainable, normal BatchNorm).

    Args:
        backbone: teacher and student architecture (see ``adkd.models.backbones.BACKBONES``).
        weights: teacher weights, "imagenet" | "none" | path to a state dict.
        sigma: Gaussian σ of the map smoothing; 0 = none (the official STFPM has no blur).
        loss_scale: factor on Σ_c ‖t̂ − ŝ‖² in the loss; 1 = the official code, 0.5 = ½‖·‖² (1 − cos).
    """

    model_name = "stfpm"

    def __init__(self, backbone: str, weights: str | os.PathLike, *, sigma: float, loss_scale: float) -> None:
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
        self.anomaly_map = AnomalyMap(sigma=sigma, reduce="prod", align_corners=False)

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
