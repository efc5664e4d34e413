"""Masked reverse distillation (``mrkd``): ``mrkd()`` builds it with the seed paper's settings."""

from adkd.models.mrkd.torch_model import LOSSES, MAP_SOURCES, MaskedReverseDistillation, mrkd

__all__ = ["LOSSES", "MAP_SOURCES", "MaskedReverseDistillation", "mrkd"]
