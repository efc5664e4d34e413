"""The model zoo (not the MLflow model registry): name → builder, description, backbones and default options."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from adkd.errors import ConfigError
from adkd.models.backbones import BACKBONES
from adkd.models.base import AnomalyModel
from adkd.models.rd.torch_model import ReverseDistillation
from adkd.models.stfpm.torch_model import STFPM, STFPMAutoencoder


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one model."""

    name: str
    description: str
    builder: Callable[..., AnomalyModel]
    default_backbone: str
    backbones: tuple[str, ...] = BACKBONES
    defaults: dict[str, Any] = field(default_factory=dict)

    def options(self) -> tuple[str, ...]:
        """Keyword options the builder accepts besides backbone and weights."""
        params = inspect.signature(self.builder).parameters
        return tuple(p for p in params if p not in ("backbone", "weights"))


def _build_rd(backbone: str, weights: str | os.PathLike, **options: Any) -> AnomalyModel:
    model = ReverseDistillation(backbone, weights, **options)
    model.model_name = "rd"
    return model


def _build_mrkd(backbone: str, weights: str | os.PathLike, **options: Any) -> AnomalyModel:
    model = ReverseDistillation(backbone, weights, **options)
    model.model_name = "mrkd"
    return model


def _build_stfpm(backbone: str, weights: str | os.PathLike, **options: Any) -> AnomalyModel:
    model = STFPM(backbone, weights, **options)
    model.model_name = "stfpm"
    return model


def _build_stfpm_ae(backbone: str, weights: str | os.PathLike, **options: Any) -> AnomalyModel:
    model = STFPMAutoencoder(backbone, weights, **options)
    model.model_name = "stfpm-ae"
    return model


MODEL_ZOO: dict[str, ModelSpec] = {
    "rd": ModelSpec(
        name="rd",
        description="Reverse distillation (RD4AD)",
        builder=_build_rd,
        default_backbone="wide_resnet50_2",
        defaults={"levels": (1, 2, 3), "loss_mode": "flatten", "bottleneck_width": None, "sigma": 4.0},
    ),
    "mrkd": ModelSpec(
        name="mrkd",
        description="rd + 1x1 fusion + SCSAtt + feature mask generation (masked RD)",
        builder=_build_mrkd,
        default_backbone="wide_resnet50_2",
        defaults={
            "levels": (1, 2, 3),
            "loss": "paper",
            "loss_mode": "flatten",
            "bottleneck_width": None,
            "sigma": 4.0,
            "fusion_conv": True,
            "use_scconv": True,
            "scconv_fusion": "per_channel",
            "use_simam": True,
            "use_fmm": True,
            "alpha": 1.0,
            "mask_rate": 0.5,
            "map_source": None,  # None: "generated" with FMM, "student" without
        },
    ),
    "stfpm": ModelSpec(
        name="stfpm",
        description="Student-teacher feature pyramid matching",
        builder=_build_stfpm,
        default_backbone="resnet18",
        defaults={"sigma": 4.0, "loss_scale": 0.5},
    ),
    "stfpm-ae": ModelSpec(
        name="stfpm-ae",
        description="stfpm + per-level U-Net autoencoder",
        builder=_build_stfpm_ae,
        default_backbone="resnet18",
        defaults={"alpha": 1e-7, "image_size": 256, "ae_stages": 3, "sigma": 4.0, "loss_scale": 0.5},
    ),
}


def build_model(
    name: str, backbone: str | None = None, weights: str | os.PathLike = "imagenet", **options: Any
) -> AnomalyModel:
    """Build model ``name`` on ``backbone`` (its default if None) with teacher ``weights`` and options.

    Options not given take the zoo's defaults; unknown names, backbones or options raise
    ``ConfigError`` naming the valid choices.
    """
    if name not in MODEL_ZOO:
        msg = f"unknown model {name!r}: choose one of {', '.join(MODEL_ZOO)}"
        raise ConfigError(msg)
    spec = MODEL_ZOO[name]
    backbone = backbone or spec.default_backbone
    if backbone not in spec.backbones:
        msg = f"model {name!r} has no backbone {backbone!r}: choose one of {', '.join(spec.backbones)}"
        raise ConfigError(msg)
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        msg = f"model {name!r} has no option {', '.join(unknown)}: its options are {', '.join(spec.defaults)}"
        raise ConfigError(msg)
    return spec.builder(backbone, weights, **{**spec.defaults, **options})


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
