"""Student-teacher feature pyramid matching (``stfpm``): ``stfpm()`` builds it."""

from adkd.models.stfpm.loss import pyramid_loss
from adkd.models.stfpm.torch_model import STFPM, stfpm

__all__ = ["STFPM", "pyramid_loss", "stfpm"]
