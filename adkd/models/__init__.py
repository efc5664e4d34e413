"""The model zoo: pure PyTorch distillation models (no file I/O, no Ray, no MLflow)."""

from adkd.models.base import AnomalyModel
from adkd.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, normalize
from adkd.models.zoo import MODEL_ZOO, ModelSpec, build_model, count_parameters

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_ZOO",
    "AnomalyModel",
    "ModelSpec",
    "Preprocess",
    "build_model",
    "count_parameters",
    "normalize",
]
