"""Letterbox padding is no evidence: pixel metrics, the pixel threshold and image scores read the image area only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adkd.pipelines.data.geometry import placement
from adkd.pipelines.evaluate.metrics import compute_metrics, pixel_curves
from adkd.pipelines.evaluate.thresholds import fit_thresholds
from adkd.pipelines.inference.validity import masked_scores, valid_mask, valid_masks


def _content(n: int = 6, h: int = 12, w: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks of ``n`` wide images: a defect region scored a little higher than its surroundings."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.3, 0.1, size=(n, h, w)).astype(np.float32)
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(0, n, 2):
        top, left = rng.integers(0, h - 4), rng.integers(0, w - 6)
        masks[i, top : top + 4, left : left + 6] = 1
        maps[i, top : top + 4, left : left + 6] += rng.normal(0.15, 0.1, size=(4, 6)).astype(np.float32)
    return maps, masks


def _pad(maps: np.ndarray, masks: np.ndarray, pad: int, fill: float) -> tuple[np.ndarray, ...]:
    """The same images with ``pad`` rows of padding above and below (map value ``fill``) and their validity."""
    n, h, w = maps.shape
    big = np.full((n, h + 2 * pad, w), fill, dtype=np.float32)
    big_masks = np.zeros((n, h + 2 * pad, w), dtype=np.uint8)
    valid = np.zeros((n, h + 2 * pad, w), dtype=bool)
    big[:, pad : pad + h], big_masks[:, pad : pad + h], valid[:, pad : pad + h] = maps, masks, True
    return big, big_masks, valid


def test_pixel_metrics_do_not_move_when_the_same_images_are_padded_more() -> None:
    maps, masks = _content()
    labels = masks.reshape(len(masks), -1).max(axis=1)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    plain = compute_metrics(maps, scores, masks, labels)
    for pad in (3, 12):
        # Padding scored lowest of all: counted as true negatives it would inflate both pixel metrics.
        big, big_masks, valid = _pad(maps, masks, pad, fill=float(maps.min()) - 1.0)
        padded = compute_metrics(big, scores, big_masks, labels, valid=valid)
        assert padded == pytest.approx(plain, abs=1e-12), pad
        inflated = compute_metrics(big, scores, big_masks, labels)
        assert inflated["pixel_auroc"] > plain["pixel_auroc"] + 0.01
        assert inflated["aupro"] > plain["aupro"] + 0.01
    curves = pixel_curves(*_pad(maps, masks, 12, 0.0)[:2], valid=_pad(maps, masks, 12, 0.0)[2])
    assert curves.n_normal + curves.n_anomalous == maps.size


def test_pixel_threshold_and_image_scores_ignore_the_padding() -> None:
    maps, _ = _content(seed=1)
    big, _, valid = _pad(maps, np.zeros_like(maps, dtype=np.uint8), 8, fill=5.0)  # padding hotter than anything
    scores = masked_scores(torch.from_numpy(big)[:, None], torch.from_numpy(valid)[:, None])
    np.testing.assert_array_equal(scores.numpy(), maps.reshape(len(maps), -1).max(axis=1))
    plain = fit_thresholds(scores, maps, 0.99)
    padded = fit_thresholds(scores, torch.from_numpy(big), 0.99, valid=torch.from_numpy(valid))
    assert padded == plain
    assert fit_thresholds(scores, big, 0.99).pixel == 5.0  # what the padding did before


def test_validity_masks_follow_the_letterbox_placement(tmp_path: Path) -> None:
    paths = []
    for i, (w, h) in enumerate([(200, 100), (100, 100), (60, 180)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (w, h), (200, 10, 10)).save(paths[-1])
    masks = valid_masks(paths, 64, "letterbox")
    assert masks is not None and masks.shape == (3, 1, 64, 64) and masks.dtype == torch.bool
    assert masks[0, 0].sum() == 64 * 32 and masks[0, 0, 16:48].all() and not masks[0, 0, :16].any()
    assert masks[1].all()
    assert masks[2, 0].sum() == 21 * 64  # 60 x 180 → 21 x 64 (rounded), centred
    # A crop of the square keeps the part of the mask the model sees.
    cropped = valid_masks(paths, 64, "letterbox", crop=48)
    assert cropped is not None and torch.equal(cropped, masks[..., 8:56, 8:56])
    assert valid_masks(paths, 64, "stretch") is None and valid_masks(paths, 64, "center-crop") is None
    assert valid_masks(paths[1:2], 64, "letterbox") is None  # square images: nothing is padding
    where = placement(200, 100, 64, "letterbox")
    assert valid_mask(where).sum() == 64 * 32
