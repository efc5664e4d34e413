"""``stfpm-ae``: STFPM with per-level U-Net autoencoders; ``stfpm_ae()`` builds it.

Its training hooks live here, not on the base class of every model: ``AutoencoderTraining`` is
what the engine checks for before pretraining or freezing an autoencoder. The model (``STFPMAutoencoder``) is in
``torch_model``, the U-Net in ``autoencoder``, its loss in ``loss``; the package itself imports neither, so
reading the defaults needs no torch.
"""

from adkd.models.stfpm_ae.builder import stfpm_ae
from adkd.models.stfpm_ae.training import AutoencoderSchedule, AutoencoderTraining, autoencoder_training

__all__ = ["AutoencoderSchedule", "AutoencoderTraining", "autoencoder_training", "stfpm_ae"]
