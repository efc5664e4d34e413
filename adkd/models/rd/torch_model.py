"""Reverse distillation (``rd``, Deng & Li, CVPR 2022).

Teacher encoder (frozen) → one-class bottleneck → de-ResNet decoder (the student), trained so
the decoder reproduces the teacher's three levels with a cosine loss. ``mrkd``
(``adkd.models.mrkd``) builds on this network through ``Additions``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from adkd.errors import ConfigError
from adkd.models.backbones import build_backbone
from adkd.models.base import AnomalyModel
from adkd.models.components.anomaly_map import AnomalyMap, image_scores
from adkd.models.components.bottleneck import OneClassBottleneck
from adkd.models.components.de_resnet import DeBasicBlock, DeBottleneck, MirrorDecoder
from adkd.models.rd.loss import LOSS_MODES, cosine_loss

# backbone → (OCE block, OCE blocks, decoder block, decoder blocks deep→shallow, RD4AD width_per_group)
_STRUCTURE: dict[str, tuple[type, int, type, tuple[int, int, int], int]] = {
    "resnet18": (BasicBlock, 2, DeBasicBlock, (2, 2, 2), 64),
    "resnet50": (Bottleneck, 3, DeBottleneck, (3, 4, 6), 64),
    "wide_resnet50_2": (Bottleneck, 3, DeBottleneck, (3, 4, 6), 128),
    "mobilenet_v2": (BasicBlock, 2, DeBasicBlock, (2, 2, 2), 64),
}


@dataclass(frozen=True)
class Additions:
    """What a variant adds to RD's network; nothing by default (plain RD).

    Args:
        fusion_conv: a 1×1 conv + BN + ReLU after the bottleneck's concatenation.
        attention: given the fused map's channels, a module re-weighting it (or None).
        generator: given a level's channels, a module regenerating the student's features of
            that level (FMM); the map and loss may then use the generated features.
    """

    fusion_conv: bool = False
    attention: Callable[[int], nn.Module | None] | None = None
    generator: Callable[[int], nn.Module] | None = None


class ReverseDistillation(AnomalyModel):
    """RD on a three-level teacher.

    Args:
        backbone: teacher name (see ``adkd.models.backbones.BACKBONES``).
        weights: teacher weights, "imagenet" | "none" | path to a state dict.
        levels: which teacher levels (1 = shallowest) enter the bottleneck's fusion, the loss and the
            map (masked RD's Table 7). The decoder still mirrors all three levels.
        loss_mode: the cosine of the loss: "flatten" (RD4AD code, one per image) or "pixel" (per position).
        bottleneck_width: OCE width per group; None = RD4AD's (128 for wide_resnet50_2, else 64).
        sigma: Gaussian σ of the map smoothing; 0 = none.
        additions: the parts a variant adds (``Additions``).
    """

    model_name = "rd"

    def __init__(
        self,
        backbone: str,
        weights: str | os.PathLike,
        *,
        levels: Sequence[int],
        loss_mode: str,
        bottleneck_width: int | None,
        sigma: float,
        additions: Additions = Additions(),  # frozen: one shared instance is safe
    ) -> None:
        super().__init__()
        if backbone not in _STRUCTURE:
            msg = f"backbone={backbone!r}: choose one of {', '.join(_STRUCTURE)}"
            raise ConfigError(msg)
        self.levels = _check_levels(levels)
        if sigma < 0:
            msg = f"sigma={sigma}: it must be >= 0 (0 = no smoothing)"
            raise ConfigError(msg)
        if loss_mode not in LOSS_MODES:
            msg = f"loss_mode={loss_mode!r}: use one of {', '.join(LOSS_MODES)}"
            raise ConfigError(msg)
        oce_block, oce_blocks, de_block, de_blocks, rd_width = _STRUCTURE[backbone]
        width = rd_width if bottleneck_width is None else int(bottleneck_width)
        if oce_block is BasicBlock and width != 64:
            msg = f"bottleneck_width={width}: {backbone} uses basic blocks, which only support 64"
            raise ConfigError(msg)
        if width <= 0:
            msg = f"bottleneck_width={width}: it must be positive"
            raise ConfigError(msg)

        self.backbone_name = backbone
        self.loss_mode = loss_mode
        self.map_source = "student"
        # Built in this order (teacher, attention, bottleneck, decoder, generators) so one seed gives
        # the same initial weights as earlier releases.
        self.teacher = build_backbone(backbone, weights, frozen=True)
        channels, strides = self.teacher.channels, self.teacher.strides
        attention = additions.attention(channels[-1] * len(self.levels)) if additions.attention else None
        self.bottleneck = OneClassBottleneck(
            channels,
            strides,
            block=oce_block,
            blocks=oce_blocks,
            width_per_group=width,
            attention=attention,
            levels=self.levels,
            fusion_conv=additions.fusion_conv,
        )
        self.decoder = MirrorDecoder(
            de_block,
            self.bottleneck.out_channels,
            self.bottleneck.out_stride,
            channels,
            strides,
            de_blocks,
            width_per_group=rd_width,
        )
        self.fmm = (
            nn.ModuleList(additions.generator(channels[i - 1]) for i in self.levels) if additions.generator else None
        )
        self.anomaly_map = AnomalyMap(sigma=sigma, reduce="sum", align_corners=True)

    def forward(
        self, images: torch.Tensor, teacher: list[torch.Tensor] | None = None
    ) -> dict[str, Any] | tuple[torch.Tensor, torch.Tensor]:
        teacher = self.teacher(images) if teacher is None else teacher
        student = self.decoder(self.bottleneck(teacher))
        t = [teacher[i - 1] for i in self.levels]
        s = [student[i - 1] for i in self.levels]
        generated = [g(x) for g, x in zip(self.fmm, s)] if self.fmm is not None else None
        if self.training:
            out: dict[str, Any] = {"teacher": t, "student": s}
            if generated is not None:
                out["generated"] = generated
            return out
        source = generated if self.map_source == "generated" else s
        amap = self.anomaly_map(t, source, images.shape[-2:])
        return amap, image_scores(amap)

    def loss(self, outputs: dict[str, Any]) -> torch.Tensor:
        return cosine_loss(outputs["teacher"], outputs["student"], self.loss_mode)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        params = list(self.bottleneck.parameters()) + list(self.decoder.parameters())
        if self.fmm is not None:
            params += list(self.fmm.parameters())
        return {"student": params}


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    try:
        chosen = tuple(sorted({int(i) for i in levels}))
    except (TypeError, ValueError):
        chosen = ()
    if not chosen or any(i not in (1, 2, 3) for i in chosen):
        msg = f"levels={levels!r}: give a non-empty subset of 1, 2, 3 (1 = shallowest teacher level)"
        raise ConfigError(msg)
    return chosen
