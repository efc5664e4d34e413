"""A PyTorch model's maps and scores in the run's own precision (bf16 autocast where the runtime says so).

This is the training-precision path: validation losses, tuning objectives and the ``test_torch/`` figures.
What ships is scored by ``adkd.pipelines.inference.artifact``.
"""

from __future__ import annotations

import torch
from torch import nn

from adkd.pipelines.inference.runtime import Runtime, autocast
from adkd.pipelines.inference.validity import masked_scores


def predict(
    model: nn.Module,
    images: torch.Tensor,
    runtime: Runtime,
    batch_size: int = 32,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps [N,1,H,W] and image scores [N] (float32, CPU) for uint8 images [N,3,H,W].

    ``valid`` (bool [N,1,H,W]): the scores are the maps' max over those pixels (letterbox padding left out).
    """
    model.eval()
    maps, scores = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = runtime.prepare(images[start : start + batch_size])
            with autocast(runtime.device, runtime.amp):
                amap, score = model(x)
            maps.append(amap.float().cpu())
            scores.append(score.float().cpu())
    if not maps:
        return torch.zeros(0, 1, *images.shape[-2:]), torch.zeros(0)
    all_maps = torch.cat(maps)
    return all_maps, (torch.cat(scores) if valid is None else masked_scores(all_maps, valid))
