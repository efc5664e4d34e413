"""Student-teacher feature pyramid matching (``stfpm``): ``stfpm()`` builds it.

The model (``STFPM``) is in ``torch_model``, its pyramid loss in ``loss``; the package itself imports only the
builder, so reading the defaults needs no torch.
"""

from adkd.models.stfpm.builder import stfpm

__all__ = ["stfpm"]
