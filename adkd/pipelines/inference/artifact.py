"""Scoring through an exported model's predictor: the numbers of the thing that ships.

Training, ``adkd evaluate`` and the int8 gate call this with the predictor that ``adkd predict``,
``adkd.load`` and the served pyfunc use (``adkd.pipelines.predict.open_predictor``), so thresholds and
metrics are fitted and measured on the artifact's own outputs, on any host. The predictor is taken as an
argument (anything with ``run``), so this package does not import the runtimes.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from adkd.pipelines.inference.validity import masked_scores


class ScoresImages(Protocol):
    """What scoring needs of a predictor: ``run`` on a uint8 NHWC batch → maps [B,h,w], scores [B], normalised [B]."""

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def nhwc(images: torch.Tensor) -> np.ndarray:
    """uint8 [N,3,H,W] tensors → contiguous uint8 [N,H,W,3] arrays (the exported graph's input)."""
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())


def score_artifact(
    predictor: ScoresImages,
    images: torch.Tensor | np.ndarray,
    valid: torch.Tensor | None = None,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps [N,1,h,w] and image scores [N] (float32) of uint8 images ([N,3,H,W] tensor or [N,H,W,3] array).

    ``valid`` (bool [N,1,h,w]): each score is the map's max over its valid pixels, as ``adkd predict`` reads it.
    """
    batch_images: Any = nhwc(images) if isinstance(images, torch.Tensor) else np.ascontiguousarray(images)
    maps, scores = [], []
    for start in range(0, len(batch_images), batch_size):
        amap, score, _ = predictor.run(batch_images[start : start + batch_size])
        maps.append(np.asarray(amap, dtype=np.float32).reshape(len(score), 1, *amap.shape[-2:]))
        scores.append(np.asarray(score, dtype=np.float32).reshape(-1))
    if not maps:
        return torch.zeros(0, 1, 0, 0), torch.zeros(0)
    all_maps = torch.from_numpy(np.concatenate(maps))
    if valid is not None:
        return all_maps, masked_scores(all_maps, valid)
    return all_maps, torch.from_numpy(np.concatenate(scores))
