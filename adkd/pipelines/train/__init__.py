"""Training and evaluation of one model on one category (no Ray, no MLflow)."""

from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult
from adkd.pipelines.train.checkpoint import load_model_from_checkpoint, save_checkpoint
from adkd.pipelines.train.config import OptimizerConfig, TrainConfig
from adkd.pipelines.train.engine import evaluate_checkpoint, train_category
from adkd.pipelines.train.presets import PRESETS, resolve_config

__all__ = [
    "PRESETS",
    "NullCallback",
    "OptimizerConfig",
    "TrainCallback",
    "TrainConfig",
    "TrainResult",
    "evaluate_checkpoint",
    "load_model_from_checkpoint",
    "resolve_config",
    "save_checkpoint",
    "train_category",
]
