"""How a run computes: device, seeding, the data order of an epoch, RNG state, autocast and tensor placement."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.train.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use --set device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in an epoch: a function of (seed, epoch) only."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Index batches; a trailing batch of one image is dropped (BatchNorm cannot train on it)."""
    n = len(order)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) == 1 and n > 1:
            return
        yield idx


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when ``enabled``; otherwise nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: CUDA, or a CPU reporting avx512_bf16 or AMX tiles."""
    if device.type == "cuda":
        return True
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
    def from_config(cls, config: TrainConfig) -> Runtime:
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
