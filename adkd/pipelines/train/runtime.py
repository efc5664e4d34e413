"""A run's repeatability: seeding, the data order of an epoch and RNG state.

Device, autocast and tensor placement (``Runtime``) live in ``adkd.pipelines.inference.runtime``, where
evaluation and export use them too; they are named here as well for the training code.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from adkd.pipelines.inference.runtime import Runtime, autocast, native_bf16, resolve_device

__all__ = [
    "Runtime",
    "autocast",
    "batches",
    "epoch_order",
    "native_bf16",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]


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
