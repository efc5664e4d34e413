"""The model zoo: pure PyTorch distillation models (no file I/O, no Ray, no MLflow).

One folder per model (``rd``, ``mrkd``, ``stfpm``, ``stfpm_ae``), each with a public builder that owns
its defaults; shared parts in ``components``; ``MODEL_ZOO`` maps the names to the builders.
"""

from adkd.models.base import AnomalyModel
from adkd.models.mrkd import mrkd
from adkd.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, normalize
from adkd.models.rd import rd
from adkd.models.stfpm import stfpm
from adkd.models.stfpm_ae import AutoencoderTraining, stfpm_ae
from adkd.models.zoo import MODEL_ZOO, ModelSpec, build_model, count_parameters, model_spec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_ZOO",
    "AnomalyModel",
    "AutoencoderTraining",
    "ModelSpec",
    "Preprocess",
    "build_model",
    "count_parameters",
    "model_spec",
    "mrkd",
    "normalize",
    "rd",
    "stfpm",
    "stfpm_ae",
]
