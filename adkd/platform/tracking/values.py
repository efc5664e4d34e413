"""Values MLflow accepts: nested configs flattened to params, long strings cut, only finite metrics."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1}}`` → ``{"optimizer.lr": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def param_value(value: Any) -> str:
    """A param's text: strings as they are, anything else as JSON, cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_VALUE]


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The entries that are finite numbers, as floats (NaN, inf and non-numbers dropped)."""
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out
