"""Reverse distillation (``rd``): ``rd()`` builds it with RD4AD's settings."""

from adkd.models.rd.loss import cosine_loss
from adkd.models.rd.torch_model import Additions, ReverseDistillation, rd

__all__ = ["Additions", "ReverseDistillation", "cosine_loss", "rd"]
