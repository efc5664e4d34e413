"""Model settings checked before any training starts: one ConfigError line naming the setting and its range.

Building a model also checks most of these, but only after data loading and teacher weights; a training
run calls ``check_model_settings`` first, so a bad value ends it before any epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.errors import ConfigError, WeightsError

# The backbones adkd.models.backbones builds, by name: here, apart from torchvision, for the zoo and the checks.
BACKBONES: tuple[str, ...] = ("resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2")

# Strides of the three teacher levels; every backbone in adkd.models.backbones has these.
LEVEL_STRIDES = (4, 8, 16)


# The deepest level map must be at least 2×2: rd/mrkd's bottleneck halves it once more, and the
# σ = 4 blur's reflect padding (radius 16) needs a map side above 16.
MIN_IMAGE_SIZE = 2 * LEVEL_STRIDES[-1]


def check_model_settings(image_size: int, options: dict[str, Any]) -> None:
    """Raise ConfigError (one line) for a setting no training can use; ``options`` are the merged model options."""
    smallest = MIN_IMAGE_SIZE
    if image_size < smallest:
        raise ConfigError(
            f"image_size={image_size}: too small for the backbone's three levels (strides "
            f"{'/'.join(map(str, LEVEL_STRIDES))}); use image_size >= {smallest}"
        )
    sigma = _number(options, "sigma")
    if sigma is not None:
        if sigma < 0:
            raise ConfigError(f"model_options.sigma={sigma}: it must be >= 0 (0 = no smoothing; the default is 4)")
        radius = int(4.0 * sigma + 0.5)
        if sigma > 0 and radius >= image_size:
            raise ConfigError(
                f"model_options.sigma={sigma}: its blur radius {radius} needs image_size > {radius}; "
                f"use sigma <= {(image_size - 1.5) / 4:.2f} at image_size={image_size}"
            )
    rate = _number(options, "mask_rate")
    if rate is not None and not 0.0 <= rate < 1.0:
        raise ConfigError(f"model_options.mask_rate={rate}: the mask rate λ must be in [0, 1)")
    alpha = _number(options, "alpha")
    if alpha is not None and alpha < 0:
        raise ConfigError(f"model_options.alpha={alpha}: α must be >= 0")
    scale = _number(options, "loss_scale")
    if scale is not None and not scale > 0:
        raise ConfigError(f"model_options.loss_scale={scale}: it must be > 0 (1 = official STFPM, 0.5 = half)")
    if "levels" in options:
        _check_levels(options["levels"])
    for key in ("ae_pretrain_epochs", "ae_freeze_epochs"):  # stfpm-ae's autoencoder phases
        epochs = _number(options, key)
        if epochs is not None and (epochs < 0 or not epochs.is_integer()):
            raise ConfigError(f"model_options.{key}={options[key]}: it must be a whole number >= 0")
    for key in ("ae_pretrain_lr", "ae_lr"):
        lr = _number(options, key)
        if lr is not None and not lr > 0:
            raise ConfigError(f"model_options.{key}={lr}: a learning rate must be > 0")


def weights_file_problem(weights: str) -> str | None:
    """Why ``weights``, a state-dict path (anything but "imagenet" and "none"), is no file here; None when it is."""
    if weights in ("imagenet", "none"):
        return None
    path = Path(weights).expanduser()
    if path.is_file():
        return None
    return f"teacher weights file {path} {'is a folder' if path.is_dir() else 'does not exist'}"


def check_weights_file(weights: str) -> None:
    """WeightsError (one line, with the fix) when ``weights`` names a state-dict file that is not here."""
    problem = weights_file_problem(weights)
    if problem:
        raise WeightsError(f"{problem}: pass an existing state-dict file, 'imagenet' or 'none'")


def _number(options: dict[str, Any], key: str) -> float | None:
    if key not in options or options[key] is None:
        return None
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"model_options.{key}={value!r}: it must be a number")
    return float(value)


def _check_levels(levels: Any) -> None:
    valid = isinstance(levels, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in levels)
    if not valid or not levels or any(i not in (1, 2, 3) for i in levels):
        raise ConfigError(
            f"model_options.levels={levels!r}: give a non-empty list of teacher levels from 1, 2, 3 (1 = shallowest)"
        )
