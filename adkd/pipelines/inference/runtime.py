"""How a model computes: device, bf16 autocast and tensor placement (training and PyTorch scoring alike)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError

# bf16 matrix units arrived with Ampere (compute capability 8.0); older GPUs emulate bf16 and run it slower.
MIN_BF16_CAPABILITY = (8, 0)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use --set device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when ``enabled``; otherwise nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: a CUDA GPU of compute capability >= 8.0, or a CPU
    reporting avx512_bf16 or AMX tiles."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        return tuple(torch.cuda.get_device_capability(index)) >= MIN_BF16_CAPABILITY
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@dataclass
class Runtime:
    """How tensors are placed and computed for a run."""

    device: torch.device
    amp: bool
    channels_last: bool

    @classmethod
    def from_config(cls, config: Any) -> Runtime:
        """From a config's ``device``, ``amp`` and ``channels_last`` (a TrainConfig); None = the device's default."""
        device = resolve_device(config.device)
        native = native_bf16(device)
        amp = native if config.amp is None else config.amp
        # On CPUs channels-last pays only together with bf16 (benchmarks/cpu_paths.py), so it follows amp there.
        default_cl = native if device.type == "cuda" else amp
        channels_last = default_cl if config.channels_last is None else config.channels_last
        return cls(device=device, amp=amp, channels_last=channels_last)

    def describe(self) -> str:
        """One line for the run's notes: precision and memory format, and how to change them."""
        precision = "bf16 autocast" if self.amp else "fp32"
        layout = "channels-last" if self.channels_last else "contiguous"
        return f"{precision}, {layout} on {self.device.type} (settings amp, channels_last)"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] → normalised float on the device (channels_last when asked)."""
        from adkd.models.preprocess import normalize

        x = normalize(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def place(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model
