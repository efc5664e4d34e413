"""Masked reverse distillation (``mrkd``): ``mrkd()`` builds it with the seed paper's settings.

The model (``MaskedReverseDistillation``, its ``LOSSES`` and ``MAP_SOURCES``) is in ``torch_model``; the package
itself imports only the builder, so reading the defaults needs no torch.
"""

from adkd.models.mrkd.builder import mrkd

__all__ = ["mrkd"]
