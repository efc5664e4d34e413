"""What every adkd model is: a plain nn.Module with a train path, an eval path and a loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class AnomalyModel(nn.Module):
    """Base class of the distillation models.

    - ``forward(images)`` in train mode returns a dict with what ``loss`` needs;
      in eval mode returns ``(anomaly_map [B,1,H,W] at input size, image_score [B])``,
      the score being the max of the Gaussian-smoothed map. The eval path exports to ONNX.
    - ``images`` are float tensors already normalised with ImageNet statistics.
    - ``forward(images, teacher=features)`` uses the given frozen-teacher features (the list
      ``self.teacher(images)`` would return) instead of running the teacher: the training
      engine's teacher feature cache passes them (adkd.pipelines.train.feature_cache).
    - ``param_groups()`` lists the trainable parameters, grouped by role
      (``"student"`` always; ``"autoencoder"`` for stfpm-ae), so the engine can give each
      group its own optimiser settings. The teacher is never in it.
    - A model that needs more of the training loop says so with a protocol of its own, which
      the engine checks for: stfpm-ae's autoencoder phases are
      ``adkd.models.stfpm_ae.AutoencoderTraining``.
    """

    model_name: str = ""

    def loss(self, outputs: dict[str, Any]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for params in self.param_groups().values():
            yield from params
