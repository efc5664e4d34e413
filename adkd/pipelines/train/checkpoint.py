"""Checkpoints: written atomically, loaded without pickled code (weights_only), rebuilt offline.

A checkpoint is a dict: ``format``, ``model_state`` (the full state dict, teacher included),
``config`` (TrainConfig as JSON-able dict), ``meta`` (thresholds, metrics, sizes, names) and, for
the resumable ``last.pt``, ``train_state`` (epoch, optimiser, scheduler, RNG, early-stopping state).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.train.config import TrainConfig, validate_config

FORMAT = 1
LAST = "last.pt"  # resumable state after the latest finished epoch
BEST = "best.pt"  # model of the lowest validation loss so far
MODEL = "model.pt"  # the final model with its thresholds and metrics


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with torch.save to a temp file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)  # atomic rename (os.replace)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (tensors and plain data only) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass a .pt file written by `adkd train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} cannot be read ({exc}); it is not an adkd checkpoint") from None
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise ConfigError(f"checkpoint {path} is not an adkd checkpoint (no model_state/config); retrain it")
    if state.get("format", 0) > FORMAT:
        raise ConfigError(f"checkpoint {path} has format {state['format']}; upgrade adkd to read it")
    return state


def model_from_state(state: dict[str, Any], source: str = "checkpoint") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model (no pretrained download: weights="none") and load its full state dict."""
    from adkd.models.zoo import build_model

    config = validate_config(state["config"], source=source)
    # A per-position tiled model holds one model per tile position (meta tiling.positions).
    model = build_for_state(
        config,
        state.get("meta") or {},
        lambda: build_model(config.model, backbone=config.backbone, weights="none", **config.model_options),
    )
    try:
        model.load_state_dict(state["model_state"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{source} does not match model '{config.model}': {first}") from None
    model.eval()
    return model, config


def build_for_state(config: TrainConfig, meta: dict[str, Any], build: Callable[[], nn.Module]) -> nn.Module:
    """The model a checkpoint's state dict belongs to: ``build()``, or one per tile position for per-position."""
    from adkd.pipelines.tiling.model import PerPositionModel
    from adkd.pipelines.tiling.spec import TilingSpec

    if config.tiling.mode != "per_position" or config.tiling.position is not None:
        return build()
    spec = TilingSpec.from_meta(meta)
    if spec is None or not spec.positions:
        raise ConfigError("a per-position checkpoint must record its tile positions (meta tiling); retrain it")
    return PerPositionModel([build() for _ in range(spec.positions)])


def load_model_from_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """(model in eval mode on CPU, its TrainConfig, meta: thresholds, metrics, image_size, category, ...)."""
    state = read_checkpoint(path)
    model, config = model_from_state(state, source=f"checkpoint {path}")
    meta = dict(state.get("meta") or {})
    meta.setdefault("category", config.category)
    meta.setdefault("model", config.model)
    meta.setdefault("backbone", config.backbone)
    meta.setdefault("image_size", config.image_size)
    meta.setdefault("crop_size", config.crop_size)
    meta.setdefault("thresholds", {})
    meta.setdefault("metrics", {})
    return model, config, meta


def checkpoint_dict(
    model: nn.Module, config: TrainConfig, meta: dict[str, Any], train_state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one shape of a checkpoint (module docstring); ``train_state`` only for the resumable ``last.pt``."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "model_state": model.state_dict(),
        "config": config.model_dump(mode="json"),
        "meta": meta,
    }
    if train_state is not None:
        state["train_state"] = train_state
    return state
