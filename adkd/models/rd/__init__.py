"""Reverse distillation (``rd``): ``rd()`` builds it with RD4AD's settings.

The model (``ReverseDistillation``, ``Additions``) is in ``torch_model``, its cosine loss in ``loss``; the
package itself imports only the builder, so reading the defaults needs no torch.
"""

from adkd.models.rd.builder import rd

__all__ = ["rd"]
