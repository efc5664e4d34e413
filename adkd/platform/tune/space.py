"""What `adkd tune` searches: each model's own knobs, refusing any the chosen loss ignores.

``mrkd``: the FMM mask rate λ, and α only with the two-term loss (the paper loss has no α).
``stfpm-ae``: the seed paper's α on a log grid with 0 included (its Table 2 sweeps 1e-4 … 1e-7 and 0)
and the epochs the autoencoder stays frozen. A space entry is ``(distribution, low, high)``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from adkd.errors import ConfigError

TUNABLE_MODELS = ("mrkd", "stfpm-ae")
# name -> (distribution, low, high); names map onto TrainConfig keys through PARAM_TARGETS.
DEFAULT_SPACES: dict[str, dict[str, tuple[str, float, float]]] = {
    "mrkd": {"mask_rate": ("uniform", 0.1, 0.9), "alpha": ("loguniform", 1e-2, 10.0)},
    "stfpm-ae": {"alpha": ("log_grid", 1e-7, 1e-4), "ae_freeze_epochs": ("int", 0, 10)},
}
PARAM_TARGETS = {
    "mask_rate": "model_options.mask_rate",
    "alpha": "model_options.alpha",
    "ae_freeze_epochs": "model_options.ae_freeze_epochs",
    "lr": "optimizer.lr",
}
INT_PARAMS = ("ae_freeze_epochs",)
# log_grid: 0 and every power of ten from low to high; int: whole numbers from low to high inclusive.
DISTRIBUTIONS = ("uniform", "loguniform", "log_grid", "int")


def log_grid(low: float, high: float) -> list[float]:
    """0 and each power of ten from ``low`` to ``high`` (both powers of ten, or rounded to them)."""
    lo, hi = round(math.log10(low)), round(math.log10(high))
    return [0.0] + [float(f"1e{e}") for e in range(lo, hi + 1)]


def ignored_knobs(model: str, model_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Knobs the model's chosen settings ignore, with the reason (searching them would waste every trial)."""
    from adkd.models.zoo import MODEL_ZOO

    options = {**MODEL_ZOO[model].defaults, **(model_options or {})}
    ignored: dict[str, str] = {}
    if model == "mrkd":
        if not options.get("use_fmm", True):
            ignored["mask_rate"] = "use_fmm=false (no mask without FMM)"
            ignored["alpha"] = "use_fmm=false (no generation term)"
        elif options.get("loss") == "paper":
            ignored["alpha"] = "the mrkd 'paper' loss has no α; set model_options.loss=two_term to search it"
    else:
        ignored["mask_rate"] = "mask_rate applies to mrkd only"
    if model != "stfpm-ae":
        ignored["ae_freeze_epochs"] = "ae_freeze_epochs applies to stfpm-ae only"
    return ignored


def parse_space(
    model: str,
    custom: dict[str, Any] | None = None,
    tune_lr: tuple[float, float] | None = None,
    model_options: dict[str, Any] | None = None,
) -> dict[str, tuple[str, float, float]]:
    """The search space: the model's default minus knobs its settings ignore, replaced per parameter by [tune.space]."""
    if model not in TUNABLE_MODELS:
        raise ConfigError(f"--model {model}: adkd tune searches {' and '.join(TUNABLE_MODELS)}")
    ignored = ignored_knobs(model, model_options)
    space = {k: v for k, v in DEFAULT_SPACES[model].items() if k not in ignored}
    for name, spec in (custom or {}).items():
        if name not in PARAM_TARGETS:
            raise ConfigError(f"[tune.space] {name}: unknown parameter; use {', '.join(PARAM_TARGETS)}")
        if name in ignored:
            raise ConfigError(f"[tune.space] {name}: {model} ignores it here: {ignored[name]}")
        try:
            dist, low, high = spec["type"], float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f'[tune.space] {name}: write it as {{type = "uniform"|"loguniform"|"log_grid"|"int", low = .., '
                f"high = ..}}"
            ) from None
        positive = dist in ("loguniform", "log_grid")
        if dist not in DISTRIBUTIONS or not low < high or (positive and low <= 0):
            raise ConfigError(
                f"[tune.space] {name}: need type in {DISTRIBUTIONS}, low < high, 0 < low for loguniform/log_grid"
            )
        if (dist == "int") != (name in INT_PARAMS):
            raise ConfigError(f'[tune.space] {name}: use type "int" for {", ".join(INT_PARAMS)} and only for them')
        space[name] = (dist, low, high)
    if tune_lr:
        space["lr"] = ("loguniform", *tune_lr)
    if not space:
        raise ConfigError(f"--model {model}: nothing left to tune with these settings ({'; '.join(ignored.values())})")
    return space


def to_ray_space(space: dict[str, tuple[str, float, float]]) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for name, (dist, low, high) in space.items():
        if dist == "log_grid":
            out[name] = tune.choice(log_grid(low, high))
        elif dist == "int":
            out[name] = tune.randint(int(low), int(high) + 1)
        else:
            out[name] = (tune.uniform if dist == "uniform" else tune.loguniform)(low, high)
    return out


def in_space(spec: tuple[str, float, float], value: float) -> bool:
    dist, low, high = spec
    if dist == "log_grid":
        return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=0.0) for v in log_grid(low, high))
    if dist == "int":
        return float(value).is_integer() and low <= value <= high
    return low <= value <= high


def apply_params(base: dict[str, Any], params: dict[str, float]) -> dict[str, Any]:
    """A copy of the config dict with each tuned parameter written where it belongs."""
    out = json.loads(json.dumps(base))
    for name, value in params.items():
        *parents, leaf = PARAM_TARGETS[name].split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = int(value) if name in INT_PARAMS else float(value)
    return out


def default_point(base: dict[str, Any], space: dict[str, tuple[str, float, float]]) -> dict[str, float] | None:
    """The base config's own values of the searched parameters, or None when one lies outside the space.

    Values not set in the config are the model's defaults (``MODEL_ZOO``).
    """
    from adkd.models.zoo import MODEL_ZOO

    model_defaults = MODEL_ZOO[base["model"]].defaults
    point: dict[str, float] = {}
    for name, spec in space.items():
        *parents, leaf = PARAM_TARGETS[name].split(".")
        node: Any = base
        for key in parents:
            node = node.get(key) or {}
        value = node.get(leaf, model_defaults.get(leaf) if parents == ["model_options"] else None)
        if value is None or not in_space(spec, float(value)):
            return None
        point[name] = float(value)
    return point


def set_line(params: dict[str, float]) -> str:
    """The tuned values as a ready `--set` line for `adkd train`."""
    return " ".join(
        f"--set {PARAM_TARGETS[k]}={int(v) if k in INT_PARAMS else f'{v:.6g}'}" for k, v in sorted(params.items())
    )
