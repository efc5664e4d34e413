"""Reverse distillation (``rd``) and masked reverse distillation (``mrkd``)."""

from adkd.models.rd.anomaly_map import CosineAnomalyMap, cosine_distance_map
from adkd.models.rd.loss import cosine_loss
from adkd.models.rd.torch_model import ReverseDistillation

__all__ = ["CosineAnomalyMap", "ReverseDistillation", "cosine_distance_map", "cosine_loss"]
