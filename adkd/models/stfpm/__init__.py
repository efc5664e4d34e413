"""Student-teacher feature pyramid matching (``stfpm``) and its autoencoder variant (``stfpm-ae``)."""

from adkd.models.stfpm.anomaly_map import PyramidAnomalyMap
from adkd.models.stfpm.autoencoder import UNetAutoencoder, stages_for
from adkd.models.stfpm.loss import normalized_sq_distance, pyramid_loss, reconstruction_loss
from adkd.models.stfpm.torch_model import STFPM, STFPMAutoencoder

__all__ = [
    "STFPM",
    "PyramidAnomalyMap",
    "STFPMAutoencoder",
    "UNetAutoencoder",
    "normalized_sq_distance",
    "pyramid_loss",
    "reconstruction_loss",
    "stages_for",
]
