"""Anomaly-detection metrics: image/pixel AUROC, AUPRO (MVTec definition) and image F1-max.

All pixel-level metrics pool every pixel of the test set. The pixel curves come from ONE
sort of all pixels: each pixel's score (as an order-preserving 32-bit key) is packed with
its ground-truth region id into a uint64, and the uint64 array is sorted with numpy's
SIMD sort, which is ~10x faster than ``np.argsort`` on millions of pixels. Equal scores
are collapsed to one threshold; a pixel counts as anomalous when ``score >= threshold``.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from adkd.errors import ConfigError, DataError
from adkd.pipelines.evaluate.arrays import as_maps, as_vector, binary, check_finite

# 8-connectivity inside each image, no connection across images (axis 0 is the image index).
_EIGHT_CONNECTED_2D = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_2D[1] = True


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for these inputs (for example no defective image) and is NaN."""


def _undefined(message: str) -> float:
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _check_pair(maps: np.ndarray, masks: np.ndarray) -> None:
    if maps.shape != masks.shape:
        raise DataError(
            f"anomaly maps {list(maps.shape)} and ground-truth masks {list(masks.shape)} differ in shape; "
            "resize the maps to the mask size before evaluating"
        )


def _check_labels(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape != labels.shape:
        raise DataError(f"got {scores.size} image scores but {labels.size} labels; pass one label per image")


# --------------------------------------------------------------------------------------- image level


def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of image scores against image labels (1 = defective)."""
    s, y = as_vector(scores, "image scores"), as_vector(labels, "image labels")
    _check_labels(s, y)
    check_finite(s, "image scores")
    y = binary(y)
    if y.all() or not y.any():
        return _undefined("image AUROC is undefined: the test set needs both good and defective images")
    return float(roc_auc_score(y, s))


def f1_max_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """Best F1 over all thresholds ``score >= t`` and the threshold reaching it."""
    s, y = as_vector(scores, "image scores"), as_vector(labels, "image labels")
    _check_labels(s, y)
    check_finite(s, "image scores")
    y = binary(y)
    n_pos = int(y.sum())
    if n_pos == 0:
        return _undefined("image F1-max is undefined: the test set has no defective image"), float("nan")
    order = np.argsort(s, kind="stable")[::-1]  # not argsort(-s): unsigned scores would wrap
    s_sorted, tp = s[order], np.cumsum(y[order])
    ends = _tie_group_ends(s_sorted)
    tp = tp[ends].astype(np.float64)
    predicted = ends + 1.0
    f1 = 2.0 * tp / (predicted + n_pos)  # = 2PR/(P+R) with P = tp/predicted, R = tp/n_pos
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_sorted[ends[best]])


def f1_max(scores: Any, labels: Any) -> float:
    """Best image-level F1 over all thresholds."""
    return f1_max_threshold(scores, labels)[0]


def _tie_group_ends(descending: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    change = np.flatnonzero(descending[1:] != descending[:-1])
    return np.append(change, descending.size - 1)


# --------------------------------------------------------------------------------------- pixel level


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the descending order of float32 scores."""
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0
    # IEEE sign/magnitude to an order-preserving unsigned key, then inverted (~) for descending.
    flip = ((bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF)) | np.uint32(0x80000000)
    return ~(bits ^ flip)


@dataclass(frozen=True)
class PixelCurves:
    """Cumulative counts at each distinct pixel threshold, from the highest score down."""

    fp: np.ndarray  # normal pixels with score >= threshold
    tp: np.ndarray  # anomalous pixels with score >= threshold
    pro: np.ndarray  # mean over GT regions of the region's fraction with score >= threshold
    n_normal: int
    n_anomalous: int
    n_regions: int
    fpr_reach: float = 1.0  # the curves stop once FPR reaches this (1.0: complete)

    def _require(self, fpr_limit: float | None) -> None:
        if (1.0 if fpr_limit is None else fpr_limit) > self.fpr_reach:
            raise ValueError(f"these pixel curves stop at FPR {self.fpr_reach}; compute them without fpr_limit")

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) from (0, 0) to (1, 1)."""
        self._require(None)
        return (
            np.concatenate(([0.0], self.fp / max(self.n_normal, 1))),
            np.concatenate(([0.0], self.tp / max(self.n_anomalous, 1))),
        )

    def auroc(self) -> float:
        """Pixel AUROC, NaN with a warning when either class is missing."""
        if self.n_anomalous == 0 or self.n_normal == 0:
            return _undefined("pixel AUROC is undefined: the test masks need both normal and defective pixels")
        fpr, tpr = self.roc()
        return float(np.trapezoid(tpr, fpr))

    def pro_curve(self, fpr_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, PRO) from (0, 0); with a limit, cut there and the PRO interpolated at exactly it."""
        self._require(fpr_limit)
        fpr = np.concatenate(([0.0], self.fp / max(self.n_normal, 1)))
        pro = np.concatenate(([0.0], self.pro))
        if fpr_limit is None:
            return fpr, pro
        k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:k] <= limit; fpr[-1] == 1
        if k < fpr.size and fpr[k - 1] < fpr_limit:
            t = (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
            return (
                np.append(fpr[:k], fpr_limit),
                np.append(pro[:k], pro[k - 1] + t * (pro[k] - pro[k - 1])),
            )
        return fpr[:k], pro[:k]

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Area under the PRO curve to ``fpr_limit`` divided by it; NaN with a warning if undefined."""
        _check_fpr_limit(fpr_limit)
        if self.n_regions == 0:
            return _undefined("AUPRO is undefined: the test masks contain no defect region")
        if self.n_normal == 0:
            return _undefined("AUPRO is undefined: the test masks contain no normal pixel")
        fpr, pro = self.pro_curve(fpr_limit)
        return float(np.trapezoid(pro, fpr) / fpr_limit)


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ConfigError(f"fpr_limit={fpr_limit}: must be in (0, 1]; the MVTec protocol uses 0.3")


def _valid_pixels(valid: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A flat bool array of the pixels that count (``valid`` [N,H,W] or [N,1,H,W], e.g. letterbox's image area)."""
    v = binary(as_maps(valid, "validity masks"))
    if v.shape != shape:
        raise DataError(f"validity masks {list(v.shape)} and anomaly maps {list(shape)} differ in shape")
    return v.reshape(-1)


def pixel_curves(maps: Any, masks: Any, fpr_limit: float | None = None, valid: Any | None = None) -> PixelCurves:
    """Sort all pixels once and accumulate FP, TP and per-region overlap per threshold.

    With ``fpr_limit`` only the pixels that can matter up to that FPR are sorted: those scoring
    at least the normal score where FPR reaches the limit (found with an O(n) partition).
    ``valid``: only these pixels count (letterbox padding is neither a true negative nor part of a region).
    """
    m, g = as_maps(maps, "anomaly maps"), binary(as_maps(masks, "ground-truth masks"))
    _check_pair(m, g)
    check_finite(m, "anomaly maps")
    regions, n_regions = ndimage.label(g, structure=_EIGHT_CONNECTED_2D)
    regions = regions.reshape(-1)
    flat = m.reshape(-1)
    if valid is not None:
        keep = _valid_pixels(valid, m.shape)
        regions, flat = regions[keep], flat[keep]
    sizes = np.bincount(regions, minlength=n_regions + 1)
    n_normal = int(sizes[0])
    present = sizes[1:] > 0  # a region wholly outside the valid pixels does not count
    n_present = int(present.sum())
    n_pixels, reach = flat.size, 1.0
    if fpr_limit is not None and fpr_limit < 1.0 and n_normal > 0:
        normal = flat[regions == 0]
        # One normal pixel past ceil(limit * n_normal) keeps the crossing point despite rounding.
        k = min(n_normal, int(np.ceil(fpr_limit * n_normal)) + 1)
        cut = np.partition(normal, n_normal - k)[n_normal - k]
        del normal
        keep = flat >= cut
        flat, regions, reach = flat[keep], regions[keep], fpr_limit
    if np.can_cast(flat.dtype, np.float32) or np.array_equal(flat.astype(np.float32), flat):
        # One uint64 per pixel: score key in the high half, region id in the low half.
        packed = np.empty(flat.size, dtype=np.uint64)
        halves = packed.view(np.uint32).reshape(-1, 2)
        high, low = (1, 0) if sys.byteorder == "little" else (0, 1)
        halves[:, high] = _descending_key(flat)
        halves[:, low] = regions
        packed.sort()
        score_key, region = halves[:, high], halves[:, low]
    else:  # float64 scores that float32 would merge: exact but slower argsort
        order = np.argsort(flat, kind="stable")[::-1]
        score_key, region = flat[order], regions[order]

    ends = _tie_group_ends(score_key)
    is_anomalous = region != 0
    tp = np.cumsum(is_anomalous)[ends]
    fp = (ends + 1) - tp
    # PRO only moves at anomalous pixels: accumulate over those, then read it at each threshold's tp.
    weight = np.zeros(n_regions + 1)
    if n_present:
        weight[1:][present] = 1.0 / (sizes[1:][present] * float(n_present))
    pro_steps = np.concatenate(([0.0], np.cumsum(weight[region[is_anomalous]])))
    pro = pro_steps[tp]
    return PixelCurves(fp, tp, pro, n_normal, int(n_pixels - n_normal), n_present, reach)


def pixel_auroc(maps: Any, masks: Any, valid: Any | None = None) -> float:
    """AUROC over all (``valid``) pixels of all images (maps [N,H,W] or [N,1,H,W], masks binary)."""
    return pixel_curves(maps, masks, valid=valid).auroc()


def pro_curve(maps: Any, masks: Any, fpr_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold from (0, 0); cut and interpolated at ``fpr_limit``."""
    if fpr_limit is not None:
        _check_fpr_limit(fpr_limit)
    c = pixel_curves(maps, masks, fpr_limit)
    if c.n_regions == 0 or c.n_normal == 0:
        raise DataError("PRO curve: the test masks need both normal pixels and at least one defect region")
    return c.pro_curve(fpr_limit)


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3, valid: Any | None = None) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (Bergmann et al. 2021).

    Regions are 8-connected components of each ground-truth mask; FPR counts the normal pixels
    of all images; PRO averages the overlap of every region; ``valid``: only these pixels count.
    """
    _check_fpr_limit(fpr_limit)
    return pixel_curves(maps, masks, fpr_limit, valid).aupro(fpr_limit)


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold from (0, 0), for image scores or flattened maps."""
    s, y = as_vector(scores, "scores"), binary(as_vector(labels, "labels"))
    _check_labels(s, y)
    c = pixel_curves(s.reshape(1, 1, -1), y.reshape(1, 1, -1))
    if c.n_anomalous == 0 or c.n_normal == 0:
        raise DataError("ROC curve: the labels need both normal and anomalous samples")
    return c.roc()


IMAGE_METRICS = ("image_auroc", "f1_max")
PIXEL_METRICS = ("pixel_auroc", "aupro")


def compute_metrics(
    maps: Any, scores: Any, masks: Any | None, labels: Any, fpr_limit: float = 0.3, valid: Any | None = None
) -> dict[str, float]:
    """The test metrics as fractions; pixel AUROC and AUPRO share one sort of the pixels.

    ``masks`` None (an image-level data set): only the image metrics, the pixel ones are absent.
    ``valid`` (bool maps): the pixels the pixel metrics count (letterbox padding left out); the image
    scores are taken as given (score them over the valid pixels, ``inference.validity.masked_scores``).
    """
    _check_fpr_limit(fpr_limit)
    m = as_maps(maps, "anomaly maps")
    s = as_vector(scores, "image scores")
    if s.size != m.shape[0]:
        raise DataError(f"got {m.shape[0]} anomaly maps but {s.size} image scores; pass one score per map")
    out = {"image_auroc": image_auroc(s, labels)}
    if masks is not None:
        curves = pixel_curves(m, masks, valid=valid)
        out |= {"pixel_auroc": curves.auroc(), "aupro": curves.aupro(fpr_limit)}
    out["f1_max"] = f1_max(s, labels)
    return out
