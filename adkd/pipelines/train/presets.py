"""Named training presets per model, and how a run's config is resolved from them.

Order of precedence: preset < config file < ``--set key=value`` overrides.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError, parse_error_line
from adkd.pipelines.train.config import TrainConfig, check_model_settings, validate_config

MODELS = ("rd", "mrkd", "stfpm", "stfpm-ae")


@dataclass(frozen=True)
class Preset:
    """A documented set of TrainConfig values for one model."""

    name: str
    model: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)


def _p(name: str, model: str, description: str, **values: Any) -> Preset:
    return Preset(name=name, model=model, description=description, values=values)


_PAPER = [
    _p(
        "paper",
        "rd",
        "RD4AD code: wide_resnet50_2, 256 px, Adam lr 0.005 betas (0.5, 0.999), batch 16, 200 epochs, "
        "trained on every train/good image (val_fraction 0), last epoch kept; thresholds from the training "
        "images' own scores (thresholds.json says so; never the test split).",
        backbone="wide_resnet50_2",
        image_size=256,
        batch_size=16,
        epochs=200,
        optimizer={"name": "adam", "lr": 0.005, "betas": [0.5, 0.999], "weight_decay": 0.0},
        val_fraction=0.0,
        keep="last",
    ),
    _p(
        "paper",
        "mrkd",
        "Masked-RD paper: wide_resnet50_2, 256 px, Adam lr 1e-3, batch 16, 200 epochs, L2 weight "
        "regularisation (weight decay 1e-5, value not published), §3.3 fusion with its 1x1 conv, SCSAtt with "
        "the SCConv paper's per-channel fuse, FMM λ 0.5, §3.8 loss (per-position cosine on the generated "
        "features, summed over levels). Trained on every train/good image (val_fraction 0), so no early "
        "stopping and the last epoch is kept; thresholds from the training images' own scores "
        "(thresholds.json says so; never the test split).",
        backbone="wide_resnet50_2",
        image_size=256,
        batch_size=16,
        epochs=200,
        optimizer={"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 1e-5},
        val_fraction=0.0,
        keep="last",
        model_options={
            "loss": "paper",
            "fusion_conv": True,
            "use_scconv": True,
            "scconv_fusion": "per_channel",
            "use_simam": True,
            "use_fmm": True,
            "levels": [1, 2, 3],
        },
    ),
    _p(
        "paper",
        "stfpm",
        "Official STFPM code: resnet18, 256 px, SGD lr 0.4 momentum 0.9 weight decay 1e-4, batch 32, "
        "100 epochs, loss Σ_c ‖t̂ − ŝ‖² averaged over batch and positions (no ½), no blur of the map "
        "(sigma 0), 80/20 split of train/good, lowest-validation-loss checkpoint kept (the official choice).",
        backbone="resnet18",
        image_size=256,
        batch_size=32,
        epochs=100,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
        model_options={"sigma": 0.0, "loss_scale": 1.0},
        val_fraction=0.2,
        keep="best_val_loss",
    ),
    _p(
        "paper",
        "stfpm-ae",
        "Seed paper: AE pretraining 100 epochs with Adam 1e-3 on teacher features, then 100 epochs of SGD "
        "(momentum 0.9, weight decay 1e-4) with student lr 0.4 and AE lr 0.04, alpha 1e-7, AE frozen for the "
        "first 5 epochs, gradient-norm clipping at 1.0 (clip value not published), best-validation-loss kept.",
        backbone="resnet18",
        image_size=256,
        batch_size=32,
        epochs=100,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
        grad_clip_norm=1.0,
        model_options={
            "alpha": 1e-7,
            "ae_pretrain_epochs": 100,
            "ae_pretrain_lr": 1e-3,
            "ae_lr": 0.04,
            "ae_freeze_epochs": 5,
        },
        val_fraction=0.2,
        keep="best_val_loss",
    ),
]

# Small and fast: 64 px, MobileNetV2 (about 5x cheaper per step than resnet18 here), random
# teacher, a few epochs; for CI and the offline demo. Epochs and the rd loss mode were chosen from
# runs on the synthetic set (benchmarks/RESULTS.md): with a random teacher RD learns slowly.
_SMOKE_COMMON: dict[str, Any] = {
    "backbone": "mobilenet_v2",
    "weights": "none",
    "image_size": 64,
    "batch_size": 8,
    "eval_batch_size": 32,
    "val_fraction": 0.2,
    "keep": "last",
    # fp32 on every CPU: at 64 px bf16 saves nothing (benchmarks/gpu_check.sh --dry-run) and the suite's
    # floors were measured in fp32, so a smoke run gives the same figures with or without avx512_bf16.
    "amp": False,
    "channels_last": False,
}
_SMOKE = [
    _p(
        "cpu-smoke",
        "rd",
        "CI/demo: 64 px, mobilenet_v2, random teacher, 16 epochs, Adam lr 0.005, per-pixel cosine loss.",
        **_SMOKE_COMMON,
        epochs=16,
        optimizer={"name": "adam", "lr": 0.005, "betas": [0.5, 0.999]},
        model_options={"loss_mode": "pixel"},
    ),
    _p(
        "cpu-smoke",
        "mrkd",
        "CI/demo: 64 px, mobilenet_v2, random teacher, 16 epochs, Adam lr 0.005; the model's defaults (1x1 "
        'fusion, per-channel SCConv, §3.8 paper loss: why, in benchmarks/RESULTS.md, "Ablation, mrkd loss").',
        **_SMOKE_COMMON,
        epochs=16,
        optimizer={"name": "adam", "lr": 0.005, "betas": [0.5, 0.999]},
    ),
    _p(
        "cpu-smoke",
        "stfpm",
        "CI/demo: 64 px, mobilenet_v2, random teacher, 8 epochs, SGD lr 0.4; unlike the paper preset it keeps "
        "adkd's σ=4 map blur and the ½ loss.",
        **_SMOKE_COMMON,
        epochs=8,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
    ),
    _p(
        "cpu-smoke",
        "stfpm-ae",
        "CI/demo: 64 px, mobilenet_v2, random teacher, 2 AE pretraining + 12 joint epochs; unlike the "
        "paper preset the AE is not frozen and learns at the student's lr 0.4 (why: benchmarks/RESULTS.md, "
        '"Synthetic data, random teacher, 64 px").',
        **_SMOKE_COMMON,
        epochs=12,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
        model_options={"ae_pretrain_epochs": 2, "ae_pretrain_lr": 1e-3, "ae_lr": 0.4, "ae_freeze_epochs": 0},
        grad_clip_norm=1.0,
    ),
]

# Real bottle images with the one real offline teacher (pass weights=<path to the MobileNetV2 file>).
_BOTTLE_COMMON: dict[str, Any] = {
    "backbone": "mobilenet_v2",
    "image_size": 128,
    "batch_size": 16,
    "val_fraction": 0.1,
    "keep": "last",
}
_BOTTLE = [
    _p(
        "bottle-mobilenet",
        "rd",
        "Real bottle at 128 px with the ImageNet MobileNetV2 teacher, 10 epochs, Adam lr 0.005 (accuracy and "
        'time: benchmarks/RESULTS.md, "Real data: MVTec AD bottle").',
        **_BOTTLE_COMMON,
        epochs=10,
        optimizer={"name": "adam", "lr": 0.005, "betas": [0.5, 0.999]},
    ),
    _p(
        "bottle-mobilenet",
        "mrkd",
        "Real bottle at 128 px with the ImageNet MobileNetV2 teacher, 10 epochs, Adam lr 0.005, the model's "
        "defaults (1x1 fusion, per-channel SCConv, §3.8 paper loss); accuracy and time: benchmarks/RESULTS.md, "
        '"Real data: MVTec AD bottle"; the loss choice: "Ablation, mrkd loss".',
        **_BOTTLE_COMMON,
        epochs=10,
        optimizer={"name": "adam", "lr": 0.005, "betas": [0.5, 0.999]},
    ),
    _p(
        "bottle-mobilenet",
        "stfpm",
        "Real bottle at 128 px with the ImageNet MobileNetV2 teacher; unlike the paper preset it keeps adkd's "
        "σ=4 map blur and the ½ loss.",
        **_BOTTLE_COMMON,
        epochs=10,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
    ),
    _p(
        "bottle-mobilenet",
        "stfpm-ae",
        "Real bottle at 128 px with the ImageNet MobileNetV2 teacher.",
        **_BOTTLE_COMMON,
        epochs=10,
        optimizer={"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4},
        model_options={"ae_pretrain_epochs": 3, "ae_lr": 0.04, "ae_freeze_epochs": 1},
        grad_clip_norm=1.0,
    ),
]

PRESETS: dict[str, dict[str, Preset]] = {}
for _preset in (*_PAPER, *_SMOKE, *_BOTTLE):
    PRESETS.setdefault(_preset.name, {})[_preset.model] = _preset


def get_preset(name: str, model: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(sorted(PRESETS))}")
    if model not in MODELS:  # a mistyped model is named as such, not as a gap in the preset
        raise ConfigError(f"unknown model '{model}'; choose one of {', '.join(sorted(MODELS))}")
    if model not in PRESETS[name]:
        raise ConfigError(
            f"preset '{name}' has no entry for model '{model}'; it covers {', '.join(sorted(PRESETS[name]))}"
        )
    return PRESETS[name][model]


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false/null, lists, dicts); a list of bare words
    (``[openvino, openvino-bf16]``, the way a shell leaves it) as a list, each item parsed alike; else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if text.startswith("[") and text.endswith("]") and "[" not in text[1:-1] and "{" not in text:
        return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
    return text


def apply_override(values: dict[str, Any], override: str) -> None:
    """Apply one ``key=value`` (dotted keys reach into nested settings) to ``values`` in place."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set '{override}' is not key=value; write e.g. --set optimizer.lr=0.001")
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set '{override}': '{part}' is not a group of settings")
        node = child
    node[parts[-1]] = parse_value(raw.strip())


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Training settings from a YAML, JSON or TOML file (a TOML ``[train]`` table is used if present)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .yaml/.json/.toml to --config")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
            data = data.get("train", data)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {parse_error_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def resolve_config(
    model: str,
    preset: str | None = "cpu-smoke",
    category: str | None = None,
    data: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    config_file: str | Path | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    source: str | None = None,
) -> TrainConfig:
    """defaults < preset < settings ([train] of adkd.toml) < config file < overrides.

    The model, category and data arguments win over the files; ``--set`` wins over everything.
    ``source`` names where the values came from in errors (default: the config file).
    """
    values: dict[str, Any] = copy.deepcopy(defaults or {})
    if preset:
        values = deep_merge(values, get_preset(preset, model).values)
    if settings:
        values = deep_merge(values, settings)
    if config_file is not None:
        values = deep_merge(values, read_config_file(config_file))
    for key, given in (("model", model), ("category", category), ("data", data), ("preset", preset)):
        if given is not None:
            values[key] = given
    for override in overrides:
        apply_override(values, override)
    missing = [k for k in ("category", "data") if not values.get(k)]
    if missing:
        raise ConfigError(f"missing setting(s) {', '.join(missing)}: pass --category and --data")
    source = source or (f"config file {config_file}" if config_file else "training config")
    config = validate_config(values, source=source)
    check_model_settings(config)
    return config
