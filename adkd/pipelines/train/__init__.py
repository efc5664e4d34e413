"""Training and evaluation of one model on one category (no Ray, no MLflow).

Names are imported lazily so that `adkd --help` and the CLI modules do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NullCallback": "callbacks",
    "TrainCallback": "callbacks",
    "TrainResult": "callbacks",
    "load_model_from_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "OptimizerConfig": "config",
    "TrainConfig": "config",
    "train_category": "engine",
    "PRESETS": "presets",
    "resolve_config": "presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"adkd.pipelines.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'adkd.pipelines.train' has no attribute {name!r}")
