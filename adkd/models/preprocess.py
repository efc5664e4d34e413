"""ImageNet normalisation and the exportable resize + normalise front end."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise images [B,3,H,W]: uint8 in [0,255] or float in [0,1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        msg = f"normalize expects images of shape [B,3,H,W], got {tuple(images.shape)}"
        raise ValueError(msg)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean, std = _stats(x)
    return (x - mean) / std


class Preprocess(nn.Module):
    """uint8 images, NHWC or NCHW → float, bilinear resize to ``image_size`` (if not there) → ImageNet normalisation.

    Antialiasing is off so the resize exports to ONNX as a plain Resize op.
    ``channels_last=True`` means the input is [B,H,W,3] (what image decoders give).
    """

    def __init__(self, image_size: int | tuple[int, int], channels_last: bool = True) -> None:
        super().__init__()
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) if self.channels_last else images
        x = x.float() / 255.0
        # An exported graph takes images at its own size (fixed height and width): the resize would be an
        # identity that runtimes still execute (OpenVINO: up to 5 % of stfpm's time), so it is left out.
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std
