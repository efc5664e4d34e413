"""Evaluation figures: files written, images picked, undefined curves survive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adkd.errors import DataError
from adkd.pipelines.evaluate.plots import (
    PANEL,
    _thin,
    overlay_strip,
    plot_overlays,
    plot_pro_curve,
    plot_roc_curves,
    rank_images,
    write_evaluation_plots,
)


def make_case(n: int = 6, size: int = 32):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, 1, size, size), dtype=np.uint8)
    labels = np.array([0, 0, 0, 1, 1, 1])
    for i in np.flatnonzero(labels):
        masks[i, 0, 8:16, 10:20] = 1
    maps = rng.random((n, 1, size, size)).astype(np.float32) * 0.3 + masks * 0.6
    # Margins past a threshold of 0.5: 0.25, -0.49 (worst false alarm), 0.2, 0.3, -0.45 (worst miss), 0.4.
    scores = np.array([0.25, 0.99, 0.3, 0.8, 0.05, 0.9])
    return images, maps, masks, scores, labels


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_rank_images_orders_by_signed_margin() -> None:
    order = rank_images([0.05, 0.9, 0.4, 0.7], [1, 0, 0, 1], image_threshold=0.5)
    # margins: 0.05-0.5=-0.45, 0.5-0.9=-0.4, 0.5-0.4=0.1, 0.7-0.5=0.2
    assert order.tolist() == [0, 1, 2, 3]


def test_write_evaluation_plots_writes_all_figures(tmp_path) -> None:
    images, maps, masks, scores, labels = make_case()
    paths = write_evaluation_plots(
        images, maps, scores, masks, labels, tmp_path, pixel_threshold=0.5, image_threshold=0.5, count=2
    )
    names = [p.name for p in paths]
    assert names[:2] == ["roc.png", "pro.png"]
    assert names[2:] == [
        "overlay_worst_01_0001.png",
        "overlay_worst_02_0004.png",
        "overlay_best_01_0005.png",
        "overlay_best_02_0003.png",
    ]
    for p in paths:
        assert p.parent == tmp_path and p.stat().st_size > 5_000
    assert read_png(paths[0]).shape == (500, 550, 3)
    assert read_png(paths[2]).shape == (308, 1118, 3)  # four 256 px panels, captions, title, the map's scale
    # worst and best overlays show different images, not one figure written twice
    assert not np.array_equal(read_png(paths[2]), read_png(paths[-1]))


def test_overlays_accept_torch_nhwc_images_and_names(tmp_path) -> None:
    images, maps, masks, scores, labels = make_case()
    nhwc = torch.from_numpy(images).permute(0, 2, 3, 1).float() / 255
    names = [f"img_{i}.png" for i in range(len(images))]
    paths = plot_overlays(nhwc, torch.from_numpy(maps), masks, scores, labels, tmp_path, 0.5, count=1, names=names)
    assert len(paths) == 2 and all(p.exists() for p in paths)


def test_curves_without_defects_still_write_a_figure(tmp_path) -> None:
    _, maps, _, scores, _ = make_case()
    masks = np.zeros_like(maps, dtype=np.uint8)
    roc = plot_roc_curves(scores, np.zeros(len(scores)), maps, masks, tmp_path)
    pro = plot_pro_curve(maps, masks, tmp_path)
    assert read_png(roc).shape == (500, 550, 3) and read_png(pro).shape == (500, 550, 3)


def test_mismatched_images_raise(tmp_path) -> None:
    images, maps, masks, scores, labels = make_case()
    with pytest.raises(DataError, match="do not match"):
        plot_overlays(images[:, :, :16], maps, masks, scores, labels, tmp_path, 0.5)
    with pytest.raises(DataError, match="one per image"):
        plot_overlays(images, maps, masks, scores[:-1], labels, tmp_path, 0.5)


def test_thin_keeps_endpoints_and_vertical_jumps() -> None:
    x = np.concatenate((np.zeros(5000), np.linspace(0, 1, 100_000)))
    y = np.concatenate((np.linspace(0, 0.9, 5000), np.full(100_000, 0.9)))
    tx, ty = _thin(x, y, n=100)
    assert tx.size < 400
    assert (tx[0], ty[0], tx[-1], ty[-1]) == (0.0, 0.0, 1.0, 0.9)
    assert ty[tx == 0].max() == pytest.approx(0.9)  # the top of the vertical jump at x = 0 is kept


def test_the_overlay_strip_shows_the_image_the_map_the_truth_and_the_prediction() -> None:
    _, maps, masks, _, _ = make_case()  # image 3 is defective: mask rows 8-15, columns 10-19 of 32
    ramp = np.linspace(0.0, 1.0, 32)
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((32, 32), 0.5)), axis=-1)
    strip = np.asarray(overlay_strip(image, maps[3, 0], masks[3, 0] > 0, 0.5, (0.0, 0.9), "worst 1"))
    top, step = 8 + 20 + 16, PANEL // 32
    panels = [strip[top : top + PANEL, x : x + PANEL].astype(int) for x in (8, 272, 590, 854)]
    inside = np.zeros((PANEL, PANEL), dtype=bool)
    inside[8 * step : 16 * step, 10 * step : 20 * step] = True
    # The image itself, scaled up 8x (a smooth one: bilinear scaling keeps its values).
    assert np.abs(panels[0][4::8, 4::8] - image * 255).max() <= 12
    # The map over the image: hot (red over blue) on the defect, cold elsewhere.
    heat = panels[1][..., 0] - panels[1][..., 2]
    assert heat[inside].mean() > heat[~inside].mean() + 60
    # The ground truth: white exactly on the defect.
    assert (panels[2][inside] == 255).all() and (panels[2][~inside] == 0).all()
    # The prediction: the defect's pixels (map >= 0.5) yellowed, the truth outlined in green.
    marked = panels[3]
    assert (marked[~inside] == panels[0][~inside]).all()  # no false alarm: map < 0.5 off the defect
    green = (marked[..., 0] == 0) & (marked[..., 1] == 255) & (marked[..., 2] == 0)
    assert green[inside].sum() > 0 and not green[~inside].any()
    assert (marked[inside & ~green][..., 2] < panels[0][inside & ~green][..., 2] + 1).all()  # yellow: blue halved
