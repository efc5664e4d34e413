"""The model zoo (not the MLflow model registry): name → public builder, description and backbones.

Each model's options and their defaults are the keyword arguments of its builder
(``adkd.models.rd.rd``, ``mrkd.mrkd``, ``stfpm.stfpm``, ``stfpm_ae.stfpm_ae``), in that one place;
``ModelSpec.defaults`` reads them from the builder's signature. Nothing here imports torch until a model is
built: a driver that only checks settings stays light.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adkd.errors import ConfigError
from adkd.models.checks import BACKBONES
from adkd.models.mrkd import mrkd
from adkd.models.rd import rd
from adkd.models.stfpm import stfpm
from adkd.models.stfpm_ae import stfpm_ae

if TYPE_CHECKING:
    from torch import nn

    from adkd.models.base import AnomalyModel

_NOT_OPTIONS = ("backbone", "weights")


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one model; its defaults are its builder's."""

    name: str
    description: str
    builder: Callable[..., AnomalyModel]
    backbones: tuple[str, ...] = BACKBONES

    @property
    def default_backbone(self) -> str:
        return inspect.signature(self.builder).parameters["backbone"].default

    @property
    def defaults(self) -> dict[str, Any]:
        """Every option the builder takes besides backbone and weights, with its default."""
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items() if k not in _NOT_OPTIONS}

    def options(self) -> tuple[str, ...]:
        """Keyword options the builder accepts besides backbone and weights."""
        return tuple(self.defaults)

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """Every option's value: ``options`` over the defaults; an unknown option raises ConfigError."""
        defaults = self.defaults
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            msg = f"model {self.name!r} has no option {', '.join(unknown)}: its options are {', '.join(defaults)}"
            raise ConfigError(msg)
        return {**defaults, **options}


MODEL_ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("rd", "Reverse distillation (RD4AD)", rd),
        ModelSpec("mrkd", "rd + 1x1 fusion + SCSAtt + feature mask generation (masked RD)", mrkd),
        ModelSpec("stfpm", "Student-teacher feature pyramid matching", stfpm),
        ModelSpec("stfpm-ae", "stfpm + per-level U-Net autoencoder", stfpm_ae),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The zoo's entry for ``name``; an unknown name raises ConfigError naming the models."""
    if name not in MODEL_ZOO:
        msg = f"unknown model {name!r}: choose one of {', '.join(MODEL_ZOO)}"
        raise ConfigError(msg)
    return MODEL_ZOO[name]


def build_model(
    name: str, backbone: str | None = None, weights: str | os.PathLike = "imagenet", **options: Any
) -> AnomalyModel:
    """Build model ``name`` on ``backbone`` (its default if None) with teacher ``weights`` and options.

    Options not given take the builder's defaults; unknown names, backbones or options raise
    ``ConfigError`` naming the valid choices.
    """
    spec = model_spec(name)
    backbone = backbone or spec.default_backbone
    if backbone not in spec.backbones:
        msg = f"model {name!r} has no backbone {backbone!r}: choose one of {', '.join(spec.backbones)}"
        raise ConfigError(msg)
    spec.resolve(options)  # unknown options fail here with the list of known ones
    return spec.builder(backbone, weights, **options)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
