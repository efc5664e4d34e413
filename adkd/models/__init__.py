"""The model zoo: pure PyTorch distillation models (no file I/O, no Ray, no MLflow).

One folder per model (``rd``, ``mrkd``, ``stfpm``, ``stfpm_ae``), each with a public builder that owns
its defaults; shared parts in ``components``; ``MODEL_ZOO`` maps the names to the builders. Importing the package
imports no torch (the builders import their model when called): the model classes, ``AnomalyModel``
(``base``) and ``Preprocess`` (``preprocess``) are imported from their modules.
"""

from adkd.models.mrkd import mrkd
from adkd.models.rd import rd
from adkd.models.stfpm import stfpm
from adkd.models.stfpm_ae import AutoencoderTraining, stfpm_ae
from adkd.models.zoo import MODEL_ZOO, ModelSpec, build_model, count_parameters, model_spec

__all__ = [
    "MODEL_ZOO",
    "AutoencoderTraining",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "model_spec",
    "mrkd",
    "rd",
    "stfpm",
    "stfpm_ae",
]
