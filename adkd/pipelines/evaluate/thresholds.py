"""Decision thresholds chosen without test labels, and scores normalised around them.

Thresholds come from the validation split, which holds only normal images: the image
threshold is a high quantile of their image scores, the pixel threshold the same quantile
of all their anomaly-map pixels. ``score_min``/``score_max`` span the validation range
(lowest map pixel, highest image score) and set the scale of the normalised scores:

    normalized = clamp((x - threshold) / (score_max - score_min) + 0.5, 0, 1)

so a score equal to the threshold reads 0.5, above it means "anomalous" (anomalib's
reading, issue #2544), and one validation range above/below saturates at 1/0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from adkd.errors import ConfigError, DataError
from adkd.pipelines.predict.predictor import MIN_RANGE  # predictors normalise numpy scores alike


@dataclass(frozen=True)
class Thresholds:
    """Image and pixel thresholds plus the validation score range used to normalise."""

    image: float
    pixel: float
    score_min: float
    score_max: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ConfigError(
                f"thresholds: missing {', '.join(missing)} (expected keys {', '.join(names)}); "
                "re-run training or evaluation to store them"
            )
        try:
            values = {n: float(data[n]) for n in names}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"thresholds: every value must be a number ({exc})") from exc
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ConfigError(f"thresholds: {', '.join(bad)} is not finite; re-fit the thresholds")
        return cls(**values)

    def normalize_image(self, scores: torch.Tensor) -> torch.Tensor:
        """Image scores mapped to [0, 1] with the image threshold at 0.5."""
        return normalize_scores(scores, self.image, self.score_min, self.score_max)

    def normalize_map(self, maps: torch.Tensor) -> torch.Tensor:
        """Anomaly maps mapped to [0, 1] with the pixel threshold at 0.5."""
        return normalize_scores(maps, self.pixel, self.score_min, self.score_max)


def _values(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise DataError(f"{name}: empty; thresholds need validation images (set val_fraction > 0)")
    if not np.isfinite(a).all():
        raise DataError(f"{name}: contains NaN or infinite values; the model diverged, lower the learning rate")
    return a


def fit_thresholds(val_scores: Any, val_maps: Any, quantile: float = 0.99, valid: Any | None = None) -> Thresholds:
    """Thresholds at ``quantile`` of validation (normal) image scores and map pixels.

    ``valid`` (bool, the maps' shape): only these pixels enter the pixel threshold (letterbox padding does not).
    """
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"threshold quantile={quantile}: must be in (0, 1), for example 0.99")
    scores = _values(val_scores, "validation image scores")
    if valid is not None:
        keep = valid.bool() if isinstance(valid, torch.Tensor) else torch.as_tensor(np.asarray(valid, dtype=bool))
        maps = val_maps if isinstance(val_maps, torch.Tensor) else torch.as_tensor(np.asarray(val_maps))
        if keep.shape != maps.shape:
            raise DataError(f"validity masks {list(keep.shape)} and validation maps {list(maps.shape)} differ in shape")
        val_maps = maps[keep]
    pixels = _values(val_maps, "validation anomaly maps")
    return Thresholds(
        image=float(np.quantile(scores, quantile)),
        pixel=float(np.quantile(pixels, quantile)),
        score_min=float(min(pixels.min(), scores.min())),
        score_max=float(max(pixels.max(), scores.max())),
    )


def normalize_scores(
    x: torch.Tensor,
    threshold: float | torch.Tensor | Thresholds,
    score_min: float | torch.Tensor | None = None,
    score_max: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``clamp((x - threshold) / (score_max - score_min) + 0.5, 0, 1)`` in plain torch ops (ONNX-safe).

    ``threshold`` may be a :class:`Thresholds`; then its image threshold and range are used
    (pass ``thresholds.pixel`` and the range explicitly, or use ``normalize_map``, for maps).
    """
    if isinstance(threshold, Thresholds):
        t = threshold
        threshold = t.image
        score_min = t.score_min if score_min is None else score_min
        score_max = t.score_max if score_max is None else score_max
    if score_min is None or score_max is None:
        raise ConfigError("normalize_scores: pass score_min and score_max, or a Thresholds object")
    if isinstance(score_min, torch.Tensor) or isinstance(score_max, torch.Tensor):
        scale = torch.clamp(torch.as_tensor(score_max) - torch.as_tensor(score_min), min=MIN_RANGE)
    else:
        scale = max(float(score_max) - float(score_min), MIN_RANGE)
    return torch.clamp((x - threshold) / scale + 0.5, 0.0, 1.0)
