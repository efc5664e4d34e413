"""``stfpm-ae``: STFPM with per-level U-Net autoencoders; ``stfpm_ae()`` builds it.

Its training hooks live here, not on the base class of every model: ``AutoencoderTraining`` is
what the engine checks for before pretraining or freezing an autoencoder.
"""

from adkd.models.stfpm_ae.autoencoder import UNetAutoencoder, stages_for
from adkd.models.stfpm_ae.loss import reconstruction_loss
from adkd.models.stfpm_ae.torch_model import STFPMAutoencoder, stfpm_ae
from adkd.models.stfpm_ae.training import AutoencoderSchedule, AutoencoderTraining, autoencoder_training

__all__ = [
    "AutoencoderSchedule",
    "AutoencoderTraining",
    "STFPMAutoencoder",
    "UNetAutoencoder",
    "autoencoder_training",
    "reconstruction_loss",
    "stages_for",
    "stfpm_ae",
]
