"""Checkpoints: written atomically, loaded without pickled code (weights_only), rebuilt offline.

A checkpoint is a dict: ``format``, ``adkd_version`` (of the writer), ``model_state`` (the full state
dict, teacher included), ``config`` (TrainConfig as JSON-able dict, ``model_options`` holding every
option's value), ``meta`` (thresholds, metrics, sizes, names) and, for the resumable ``last.pt``,
``train_state`` (epoch, optimiser, scheduler, RNG, early-stopping state).

Format 1 (every release before format 2) stored only the model options a run set. Reading one fills
in the defaults of the release that wrote it (``adkd.models.past_defaults``), recognised by its
weights, so a later change of a default can neither break nor silently alter a stored model.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError, first_line
from adkd.pipelines.train.config import MOVED_TO_MODEL_OPTIONS, TrainConfig, validate_config
from adkd.version import __version__

log = logging.getLogger(__name__)

FORMAT = 2  # 1: config.model_options held only the options a run set; 2: every option's value
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


def _load_failure(exc: Exception) -> str:
    """torch.load's reason in a few words: its weights-only refusal is a page of advice about trusting the file."""
    first = first_line(exc)
    if first.startswith("Weights only load failed"):
        return "it holds objects other than tensors and plain data, which adkd does not unpickle"
    return first if len(first) <= 200 else first[:197] + "..."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (tensors and plain data only) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass a .pt file written by `adkd train`")
    if path.suffix == ".onnx":
        raise ConfigError(
            f"checkpoint {path} is an exported ONNX model, not a checkpoint; pass the model.pt `adkd train` wrote "
            "beside it"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"checkpoint {path} cannot be read ({_load_failure(exc)}); it is not an adkd checkpoint"
        ) from None
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise ConfigError(f"checkpoint {path} is not an adkd checkpoint (no model_state/config); retrain it")
    if state.get("format", 1) > FORMAT:
        raise ConfigError(f"checkpoint {path} has format {state['format']}; upgrade adkd to read it")
    if state.get("format", 1) < 2:
        state["config"] = _format1_config(state, f"checkpoint {path}")
    return state


def _format1_config(state: dict[str, Any], source: str) -> dict[str, Any]:
    """A format-1 ``config`` with every model option: the defaults of the release that wrote it, then its own."""
    from adkd.models.past_defaults import FORMAT1_DEFAULTS
    from adkd.models.zoo import MODEL_ZOO

    values = dict(state["config"])
    model = values.get("model")
    if model not in MODEL_ZOO:
        return values  # not a training config adkd can rebuild; validate_config names what is wrong
    overrides = dict(values.get("model_options") or {})
    for key, (owner, _) in MOVED_TO_MODEL_OPTIONS.items():
        if model == owner and key in values:  # a TrainConfig setting then, written into every config
            overrides.setdefault(key, values.pop(key))
    weights = _shapes(state["model_state"])
    for past in FORMAT1_DEFAULTS:
        options = {**past.models[model], **overrides}
        if _model_shapes(model, values.get("backbone"), options) == weights:
            log.warning(
                "note: %s is format 1 (model options not stored): read with the %s defaults of adkd %s",
                source,
                model,
                past.releases,
            )
            return {**values, "model_options": json.loads(json.dumps(options))}  # as stored: lists, not tuples
    raise ConfigError(
        f"{source} is format 1 and its weights match no earlier release's '{model}' with options {overrides}; "
        "retrain it"
    )


def _shapes(model_state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes; of position 0 for a per-position tiled model (one model per position)."""
    shapes = {k: tuple(v.shape) for k, v in model_state.items()}
    if not any(k.startswith("teacher.") for k in shapes) and any(k.startswith("models.0.") for k in shapes):
        shapes = {k.removeprefix("models.0."): v for k, v in shapes.items() if k.startswith("models.0.")}
    return shapes


def _model_shapes(model: str, backbone: str | None, options: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    from adkd.models.zoo import build_model

    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        try:
            built = build_model(model, backbone=backbone, weights="none", **options)
        except ConfigError:
            return None
    return _shapes(built.state_dict())


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
        first = first_line(exc)
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
    resolved = config.resolved()
    state: dict[str, Any] = {
        "format": FORMAT,
        "adkd_version": __version__,
        "model_state": model.state_dict(),
        "config": resolved.model_dump(mode="json"),
        "meta": meta,
    }
    if train_state is not None:
        state["train_state"] = train_state
    return state
