"""The resize policies: any size to the model's square and back, masks aligned with their images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import ConfigError
from adkd.pipelines.data.geometry import fit, placement, unfit
from adkd.pipelines.data.images import read_mask, read_rgb
from tests.varying_sizes import defect_box, write_varying_category


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_placements_keep_or_fill_the_square() -> None:
    assert placement(40, 100, 64, "stretch").dst == (0, 0, 64, 64)
    box = placement(40, 100, 64, "letterbox")
    assert box.dst == (19, 0, 45, 64)  # 40 * 0.64 = 25.6 -> 26 px wide, centred; the aspect ratio is kept
    crop = placement(40, 100, 64, "center-crop")
    assert crop.src == (0.0, 30.0, 40.0, 70.0) and crop.dst == (0, 0, 64, 64)
    with pytest.raises(ConfigError, match="resize='squash' is invalid"):
        placement(40, 100, 64, "squash")


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "center-crop"])
def test_mask_follows_its_image_on_a_drawn_defect(tmp_path: Path, mode: str) -> None:
    cat = write_varying_category(tmp_path, n_train=1, n_good=1, n_bad=3, seed=1)
    for image_path in sorted((cat / "test" / "crack").glob("*.png")):
        mask_path = cat / "ground_truth" / "crack" / f"{image_path.stem}_mask.png"
        image = read_rgb(image_path, 64, resize=mode)
        mask = read_mask(mask_path, 64, resize=mode).astype(bool)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        bright = image[..., 0] > 200  # the drawn defect is 250, the stripes at most ~150
        assert mask.any() and _iou(mask, bright) > 0.7, (mode, _iou(mask, bright))
        if mode == "letterbox":  # the padding is black and holds no mask pixel
            left, _, right, _ = placement(*Image.open(image_path).size, 64, mode).dst
            assert image[:, :left].max() == 0 and image[:, right:].max() == 0 and not mask[:, :left].any()


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "center-crop"])
def test_a_map_goes_back_to_the_original_size_and_place(mode: str) -> None:
    width, height = 41, 103
    truth = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = defect_box(width, height)
    truth[top:bottom, left:right] = 255
    square = np.asarray(fit(Image.fromarray(truth), 64, mode, Image.Resampling.NEAREST), dtype=np.float32) / 255
    where = placement(width, height, 64, mode)
    back = unfit(square, where)
    assert back.shape == (height, width)
    seen = np.zeros_like(truth, dtype=bool)  # center-crop cuts the top and bottom off; the rest is seen
    s_left, s_top, s_right, s_bottom = (round(v) for v in where.src)
    seen[s_top:s_bottom, s_left:s_right] = True
    assert (truth[seen] > 0).sum() > 0
    assert _iou(back > 0.5, (truth > 0) & seen) > 0.8
    cropped = unfit(square[8:56, 8:56], placement(width, height, 64, mode), crop=48)  # a centre crop_size
    assert cropped.shape == (height, width) and np.isfinite(cropped).all()


def test_stretch_of_a_square_image_is_unchanged() -> None:
    img = Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    assert fit(img, 64, "stretch", Image.Resampling.BILINEAR) is img
