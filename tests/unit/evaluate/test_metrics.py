"""Metrics against independent brute-force definitions and scikit-learn."""

from __future__ import annotations

import warnings
from collections import deque
from itertools import pairwise

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from adkd.errors import ConfigError, DataError
from adkd.pipelines.evaluate.metrics import (
    UndefinedMetricWarning,
    aupro,
    compute_metrics,
    f1_max,
    f1_max_threshold,
    image_auroc,
    pixel_auroc,
    pixel_curves,
    pro_curve,
    roc_curve,
)

# ------------------------------------------------------------------ brute-force reference (independent)


def flood_fill_regions(mask: np.ndarray, diagonal: bool = True) -> list[list[tuple[int, int]]]:
    """Connected components of one binary mask by breadth-first search."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    if not diagonal:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    regions = []
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue, region = deque([(y, x)]), []
            while queue:
                cy, cx = queue.popleft()
                region.append((cy, cx))
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            regions.append(region)
    return regions


def brute_pro_points(maps: np.ndarray, masks: np.ndarray, diagonal: bool = True) -> list[tuple[float, float]]:
    """(FPR, PRO) at +inf and at every distinct score, with explicit loops over regions."""
    regions = [
        [maps[i][tuple(np.array(r).T)] for r in flood_fill_regions(masks[i], diagonal)] for i in range(len(maps))
    ]
    regions = [r for per_image in regions for r in per_image]
    normal = maps[masks == 0]
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float(np.sum(normal >= t)) / normal.size
        pro = sum(float(np.mean(r >= t)) for r in regions) / len(regions)
        points.append((fpr, pro))
    return points


def brute_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3, diagonal: bool = True) -> float:
    points = brute_pro_points(maps, masks, diagonal)
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(points):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def brute_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = int(np.sum(pred & (labels == 1)))
        fp = int(np.sum(pred & (labels == 0)))
        fn = int(np.sum(~pred & (labels == 1)))
        if tp:
            precision, recall = tp / (tp + fp), tp / (tp + fn)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def random_case(seed: int, n: int = 5, size: int = 10, levels: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Tiny maps with quantised scores (many ties) and blob masks; image 0 stays normal."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(1, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 2, 2)
            hy, hx = rng.integers(1, 4, 2)
            masks[i, y : y + hy, x : x + hx] = 1
        masks[i] |= (rng.random((size, size)) < 0.05).astype(np.uint8)  # specks, diagonal contacts
    # Quantised boosts make normal and anomalous pixels share thresholds (diagonal curve steps).
    boost = masks * rng.integers(0, 4, (n, size, size))
    maps = (rng.integers(0, levels, (n, size, size)) + boost).astype(np.float32) / levels
    return maps, masks


# ------------------------------------------------------------------------------------------- AUPRO


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_equals_brute_force(seed: int, limit: float) -> None:
    maps, masks = random_case(seed)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(brute_aupro(maps, masks, limit), abs=1e-6)


def test_aupro_brute_force_with_continuous_scores_and_negatives() -> None:
    rng = np.random.default_rng(42)
    maps, masks = random_case(3, n=4, size=12)
    maps = (maps - 0.5) * 3 + rng.normal(0, 0.01, maps.shape).astype(np.float32)
    maps[0, 0, :3] = [-0.0, 0.0, -0.0]  # signed zeros are one threshold
    assert aupro(maps, masks) == pytest.approx(brute_aupro(maps, masks), abs=1e-6)


def test_pro_curve_points_equal_brute_force() -> None:
    maps, masks = random_case(5)
    fpr, pro = pro_curve(maps, masks)
    expected = np.array(brute_pro_points(maps, masks))
    np.testing.assert_allclose(fpr, expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(pro, expected[:, 1], atol=1e-12)
    cut_fpr, cut_pro = pro_curve(maps, masks, fpr_limit=0.3)
    assert cut_fpr[-1] == 0.3
    assert np.all(np.diff(cut_fpr) >= 0)
    assert np.interp(0.3, fpr, pro) == pytest.approx(cut_pro[-1], abs=1e-12)


def test_aupro_perfect_and_inverted_maps() -> None:
    masks = np.zeros((3, 16, 16), dtype=np.uint8)
    masks[1, 2:6, 2:6] = 1
    masks[2, 10:15, 3:4] = 1
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks.astype(np.float32), masks) == pytest.approx(0.0)


def test_aupro_single_region_known_value() -> None:
    # 1 region of 4 pixels scored 0.9, 0.9, 0.1, 0.1; 8 normal pixels: 4 at 0.5 and 4 at 0.0.
    maps = np.array([[0.9, 0.9, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    masks = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
    # Curve: (0,0) -> t=0.9 (0, 0.5) -> t=0.5 (0.5, 0.5): PRO is 0.5 on [0, 0.3].
    assert aupro(maps[None], masks[None]) == pytest.approx(0.5, abs=1e-12)
    assert pixel_curves(maps[None], masks[None]).n_regions == 1


def test_regions_touching_diagonally_are_one_region() -> None:
    masks = np.zeros((1, 8, 8), dtype=np.uint8)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 3, 3] = 1  # a diagonal line: 1 region (8-conn), 3 (4-conn)
    masks[0, 5:8, 5:8] = 1
    maps = np.zeros((1, 8, 8), dtype=np.float32)
    maps[0, 1, 1] = 1.0
    maps[0, 5:8, 5:8] = 0.8
    maps[0, 0, 7] = 0.9  # one normal pixel in between
    assert pixel_curves(maps, masks).n_regions == 2
    eight = brute_aupro(maps, masks, diagonal=True)
    four = brute_aupro(maps, masks, diagonal=False)
    assert eight != pytest.approx(four, abs=1e-3)
    assert aupro(maps, masks) == pytest.approx(eight, abs=1e-9)


def test_regions_do_not_connect_across_images() -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 3, 1] = 1  # bottom row of image 0
    masks[1, 0, 1] = 1  # top row of image 1: adjacent only if the images were stacked
    assert pixel_curves(np.zeros((2, 4, 4), np.float32), masks).n_regions == 2


def test_constant_maps() -> None:
    maps, masks = np.full((3, 8, 8), 0.7, dtype=np.float32), np.zeros((3, 8, 8), dtype=np.uint8)
    masks[1, 2:4, 2:4] = 1
    # One threshold: the curve goes straight from (0, 0) to (1, 1), so the area to 0.3 is 0.3²/2 / 0.3.
    assert aupro(maps, masks) == pytest.approx(0.15, abs=1e-12)
    assert pixel_auroc(maps, masks) == pytest.approx(0.5, abs=1e-12)


def test_no_defective_image_gives_nan_and_warning() -> None:
    maps, masks = np.random.default_rng(0).random((3, 8, 8)), np.zeros((3, 8, 8), dtype=np.uint8)
    with pytest.warns(UndefinedMetricWarning, match="no defect region"):
        assert np.isnan(aupro(maps, masks))
    with pytest.warns(UndefinedMetricWarning, match="pixel AUROC"):
        assert np.isnan(pixel_auroc(maps, masks))
    with pytest.warns(UndefinedMetricWarning, match="image AUROC"):
        assert np.isnan(image_auroc([0.1, 0.2, 0.3], [0, 0, 0]))
    with pytest.warns(UndefinedMetricWarning, match="F1"):
        assert np.isnan(f1_max([0.1, 0.2, 0.3], [0, 0, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compute_metrics(maps, maps.max(axis=(1, 2)), masks, [0, 0, 0])
    assert all(np.isnan(v) for v in result.values())
    assert len([w for w in caught if issubclass(w.category, UndefinedMetricWarning)]) == 4


def test_fpr_limit_must_be_a_fraction() -> None:
    maps, masks = random_case(0)
    with pytest.raises(ConfigError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=0.0)


def test_float64_scores_that_float32_would_merge_stay_exact() -> None:
    maps, masks = random_case(1, n=3, size=8)
    fine = maps.astype(np.float64)
    fine[1][masks[1] == 1] += 1e-12  # separates anomalous from normal ties only in float64
    assert aupro(fine, masks) == pytest.approx(brute_aupro(fine, masks), abs=1e-6)
    assert pixel_auroc(fine, masks) == pytest.approx(roc_auc_score(masks.ravel(), fine.ravel()), abs=1e-12)


# ------------------------------------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", range(4))
def test_pixel_auroc_equals_sklearn(seed: int) -> None:
    maps, masks = random_case(seed, n=6, size=16, levels=7)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_torch_inputs_with_channel_dimension() -> None:
    maps, masks = random_case(2)
    expected = aupro(maps, masks)
    t_maps = torch.from_numpy(maps)[:, None].to(torch.bfloat16).float()
    assert aupro(t_maps, torch.from_numpy(masks)[:, None]) == pytest.approx(
        brute_aupro(t_maps[:, 0].numpy(), masks), abs=1e-6
    )
    assert aupro(torch.from_numpy(maps)[:, None], torch.from_numpy(masks)[:, None]) == expected


def test_roc_curve_matches_auroc() -> None:
    rng = np.random.default_rng(3)
    scores, labels = rng.integers(0, 9, 60).astype(np.float32), rng.integers(0, 2, 60)
    fpr, tpr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


# ------------------------------------------------------------------------------------------- F1-max


@pytest.mark.parametrize("seed", range(6))
def test_f1_max_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[0] = 1
    scores = rng.integers(0, 10, 40) + 3.0 * labels * rng.random(40)
    f1, threshold = f1_max_threshold(scores, labels)
    assert f1 == pytest.approx(brute_f1_max(scores, labels), abs=1e-12)
    pred = scores >= threshold
    tp = np.sum(pred & (labels == 1))
    assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(f1, abs=1e-12)


def test_f1_max_perfect_separation() -> None:
    assert f1_max([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0


# ------------------------------------------------------------------------------------- compute_metrics


def test_compute_metrics_matches_individual_metrics() -> None:
    maps, masks = random_case(4, n=6)
    scores = maps.max(axis=(1, 2))
    labels = masks.reshape(len(masks), -1).max(axis=1)
    result = compute_metrics(maps, scores, masks, labels)
    assert set(result) == {"image_auroc", "pixel_auroc", "aupro", "f1_max"}
    assert result["aupro"] == pytest.approx(brute_aupro(maps, masks), abs=1e-6)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["f1_max"] == pytest.approx(brute_f1_max(scores, labels), abs=1e-12)


def test_bad_inputs_raise_clear_errors() -> None:
    maps, masks = random_case(0)
    with pytest.raises(DataError, match="differ in shape"):
        aupro(maps, masks[:, :-1])
    with pytest.raises(DataError, match=r"\[N, H, W\]"):
        pixel_auroc(maps[0], masks[0])
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        aupro(bad, masks)
    with pytest.raises(DataError, match="one score per map"):
        compute_metrics(maps, maps.max(axis=(1, 2))[:-1], masks, [0, 1, 1, 1, 1])
    with pytest.raises(DataError, match="labels"):
        image_auroc([0.1, 0.2], [0, 1, 1])


def test_integer_maps_beyond_float32_precision_stay_exact() -> None:
    maps = np.array([[[2**25 + 1, 2**25, 3, 2**25]]], dtype=np.int32)  # 2**25 + 1 is not a float32
    masks = np.array([[[1, 0, 0, 0]]], dtype=np.uint8)
    assert pixel_auroc(maps, masks) == 1.0
    assert aupro(maps, masks) == 1.0


@pytest.mark.parametrize("limit", [0.3, 0.01, 0.999])
def test_truncated_sort_gives_the_full_curve_value(limit: float) -> None:
    rng = np.random.default_rng(7)
    maps, masks = random_case(11, n=12, size=24, levels=30)
    maps = maps + rng.normal(0, 0.05, maps.shape).astype(np.float32) * (rng.random(maps.shape) < 0.5)
    full = pixel_curves(maps, masks)
    part = pixel_curves(maps, masks, fpr_limit=limit)
    assert part.fp.size < full.fp.size
    assert part.aupro(limit) == pytest.approx(full.aupro(limit), abs=1e-12)
    with pytest.raises(ValueError, match="without fpr_limit"):
        part.auroc()
