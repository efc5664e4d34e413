"""Evaluation figures as PNG files: ROC curves, the PRO curve, and per-image overlays.

The curves are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display), so they are
safe in worker processes and headless servers; the overlays are composed with Pillow (six per training).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adkd.errors import DataError
from adkd.pipelines.evaluate.arrays import as_maps, as_vector, binary
from adkd.pipelines.evaluate.metrics import PixelCurves, f1_max_threshold, pixel_curves, roc_curve

_MAX_CURVE_POINTS = 4000  # pixel curves have millions of points; a PNG needs a few thousand


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def _thin(x: np.ndarray, y: np.ndarray, n: int = _MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first and last point at each of ``n`` x positions so vertical jumps survive."""
    if x.size <= 2 * n:
        return x, y
    grid = np.linspace(x[0], x[-1], n)
    first = np.searchsorted(x, grid, side="left")
    last = np.searchsorted(x, grid, side="right") - 1
    keep = np.unique(np.clip(np.concatenate(([0, x.size - 1], first, last)), 0, x.size - 1))
    return x[keep], y[keep]


def _has_both(labels: np.ndarray) -> bool:
    return bool(labels.any() and not labels.all())


def plot_roc_curves(
    image_scores: Any,
    image_labels: Any,
    maps: Any,
    masks: Any,
    out_dir: Path,
    name: str = "roc.png",
    curves: PixelCurves | None = None,
) -> Path:
    """Image-level and pixel-level ROC curves in one figure; an undefined curve is noted instead.

    ``curves`` (from ``pixel_curves(maps, masks)``) saves sorting the pixels again.
    """
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    notes = []
    labels = binary(as_vector(image_labels, "image labels"))
    if _has_both(labels):
        fpr, tpr = roc_curve(image_scores, labels)
        ax.plot(fpr, tpr, label=f"image  AUROC {100 * np.trapezoid(tpr, fpr):.1f}%", drawstyle="default")
    else:
        notes.append("image ROC undefined (needs good and defective images)")
    if masks is not None:  # None: an image-level data set, no pixel curve
        curves = curves or pixel_curves(maps, masks)
        if curves.n_anomalous and curves.n_normal:
            ax.plot(*_thin(*curves.roc()), label=f"pixel  AUROC {100 * curves.auroc():.1f}%")
        else:
            notes.append("pixel ROC undefined (needs defect pixels)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title("ROC")
    if notes:
        ax.text(0.5, 0.05, "\n".join(notes), ha="center", fontsize=8, transform=ax.transAxes)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, Path(out_dir) / name)


def plot_pro_curve(
    maps: Any,
    masks: Any,
    out_dir: Path,
    fpr_limit: float = 0.3,
    name: str = "pro.png",
    curves: PixelCurves | None = None,
) -> Path:
    """PRO against FPR over the whole range, the integration limit marked and its area shaded."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    curves = curves or pixel_curves(maps, masks)
    if curves.n_regions and curves.n_normal:
        fpr, pro = curves.pro_curve()
        cut_fpr, cut_pro = curves.pro_curve(fpr_limit)
        ax.plot(*_thin(fpr, pro), label=f"PRO  (AUPRO@{fpr_limit:g} {100 * curves.aupro(fpr_limit):.1f}%)")
        ax.fill_between(*_thin(cut_fpr, cut_pro), alpha=0.2)
    else:
        ax.text(0.5, 0.5, "PRO undefined: no defect region", ha="center", transform=ax.transAxes)
    ax.axvline(fpr_limit, color="tab:red", linestyle="--", linewidth=1, label=f"FPR limit {fpr_limit:g}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (normal pixels)")
    ax.set(ylabel="per-region overlap")
    ax.set_title("PRO curve")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, Path(out_dir) / name)


def _as_rgb(images: Any, n: int, hw: tuple[int, int]) -> np.ndarray:
    """[N, H, W, 3] floats in [0, 1] from uint8 or [0, 1] float images, NCHW or NHWC."""
    a = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 1, -1)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] != n or a.shape[1:3] != hw:
        raise DataError(
            f"images {list(a.shape)} do not match {n} anomaly maps of {hw[0]}x{hw[1]}; "
            "pass the test images at the map size, [N,3,H,W] or [N,H,W,3]"
        )
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    a = np.clip(a, 0.0, 1.0)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def rank_images(scores: Any, labels: Any, image_threshold: float) -> np.ndarray:
    """Image indices from worst to best: signed margin of the score past the threshold."""
    s = as_vector(scores, "image scores").astype(np.float64)
    y = binary(as_vector(labels, "image labels"))
    margin = np.where(y, s - image_threshold, image_threshold - s)
    return np.argsort(margin, kind="stable")


def plot_overlays(
    images: Any,
    maps: Any,
    masks: Any,
    scores: Any,
    labels: Any,
    out_dir: Path,
    pixel_threshold: float,
    image_threshold: float | None = None,
    count: int = 3,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Image, heatmap, ground truth and predicted mask for the ``count`` worst and best images.

    Worst/best by the margin of the image score past ``image_threshold`` (on the wrong side
    is worst); without one, the F1-optimal threshold of these scores is used.
    """
    m = as_maps(maps, "anomaly maps").astype(np.float32)
    g = np.zeros(m.shape, dtype=bool) if masks is None else binary(as_maps(masks, "ground-truth masks"))
    n, h, w = m.shape
    if g.shape != m.shape:
        raise DataError(f"anomaly maps {list(m.shape)} and masks {list(g.shape)} differ in shape")
    rgb = _as_rgb(images, n, (h, w))
    s = as_vector(scores, "image scores")
    y = binary(as_vector(labels, "image labels"))
    if s.size != n or y.size != n:
        raise DataError(f"got {n} anomaly maps, {s.size} scores and {y.size} labels; pass one per image")
    if names is not None and len(names) != n:
        raise DataError(f"got {len(names)} image names for {n} images")
    if image_threshold is None:
        image_threshold = f1_max_threshold(s, y)[1] if y.any() else float(np.max(s))
    order = rank_images(s, y, image_threshold)
    vmin, vmax = float(m.min()), float(m.max())
    worst, best = order[:count], order[::-1][:count]
    paths = []
    for kind, picked in (("worst", worst), ("best", best)):
        for rank, i in enumerate(picked, start=1):
            label = names[i] if names is not None else f"image {i}"
            title = (
                f"{kind} {rank}: {label}  ({'defective' if y[i] else 'good'}, score {s[i]:.4g}, "
                f"threshold {image_threshold:.4g})"
            )
            strip = overlay_strip(rgb[i], m[i], g[i], pixel_threshold, (vmin, vmax), title)
            path = Path(out_dir) / f"overlay_{kind}_{rank:02d}_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            strip.save(path)
            paths.append(path)
    return paths


# The overlay strip: four panels of PANEL px (the long side), captions above them, the title above all, and the
# anomaly map's colour scale beside its panel. Composed with Pillow: about a quarter of the CPU of the matplotlib
# figure it replaced, six times per evaluated training.
PANEL = 256
_PAD, _CAPTION, _TITLE, _BAR, _BAR_TEXT = 8, 16, 20, 10, 44
_PREDICTED = np.array([255, 255, 0], dtype=np.float32)  # matplotlib's "autumn" at 1: predicted defect pixels
_TRUTH_EDGE = (0, 255, 0)  # the ground-truth outline


def _jet(values: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """``values`` through matplotlib's jet colour map between ``limits``, as float RGB in [0, 255]."""
    from matplotlib import colormaps

    low, high = limits
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    return colormaps["jet"](scaled)[..., :3].astype(np.float32) * 255.0


@functools.cache
def _font(size: int) -> Any:
    """Pillow's built-in font at ``size`` px, loaded once per size (seven texts per strip)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def overlay_strip(
    image: np.ndarray,
    amap: np.ndarray,
    mask: np.ndarray,
    pixel_threshold: float,
    limits: tuple[float, float],
    title: str,
) -> Any:
    """Image | map over the image (jet, with its scale) | ground truth | predicted pixels (map >= the pixel
    threshold, yellow) with the ground truth outlined (green), as one PIL image."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w = amap.shape
    scale = PANEL / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def resized(a: np.ndarray, nearest: bool = False) -> np.ndarray:
        mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(a).resize(size, mode))

    base = resized((image * 255.0 + 0.5).astype(np.uint8)).astype(np.float32)
    heat = _jet(resized(amap.astype(np.float32)), limits)
    truth = resized(mask.astype(np.uint8) * 255, nearest=True) > 127
    predicted = resized((amap >= pixel_threshold).astype(np.uint8) * 255, nearest=True) > 127
    marked = base.copy()
    marked[predicted] = 0.5 * base[predicted] + 0.5 * _PREDICTED
    edge = truth & ~ndimage.binary_erosion(truth, iterations=2)
    marked[edge] = _TRUTH_EDGE
    panels = [base, 0.5 * base + 0.5 * heat, np.repeat(truth[..., None] * 255.0, 3, axis=-1), marked]
    captions = ["image", "anomaly map", "ground truth", f"prediction (map >= {pixel_threshold:.3g})"]

    top = _PAD + _TITLE + _CAPTION
    xs, x = [], _PAD
    for k in range(len(panels)):
        xs.append(x)
        x += size[0] + _PAD + (_BAR + _BAR_TEXT if k == 1 else 0)
    canvas = Image.new("RGB", (x, top + size[1] + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, _PAD), title, fill="black", font=_font(12))
    for left, panel, caption in zip(xs, panels, captions, strict=True):
        canvas.paste(Image.fromarray(np.clip(panel + 0.5, 0, 255).astype(np.uint8)), (left, top))
        draw.text((left, top - _CAPTION + 1), caption, fill="black", font=_font(11))
    # The colour scale of the map panel: high at the top, its limits written beside it.
    bar_left = xs[1] + size[0] + 4
    ramp = np.linspace(limits[1], limits[0], size[1], dtype=np.float32)[:, None].repeat(_BAR, axis=1)
    canvas.paste(Image.fromarray(np.clip(_jet(ramp, limits) + 0.5, 0, 255).astype(np.uint8)), (bar_left, top))
    for value, y in ((limits[1], top), (limits[0], top + size[1] - 12)):
        draw.text((bar_left + _BAR + 3, y), f"{value:.3g}", fill="black", font=_font(10))
    return canvas


def write_evaluation_plots(
    images: Any,
    maps: Any,
    scores: Any,
    masks: Any,
    labels: Any,
    out_dir: Path,
    pixel_threshold: float,
    image_threshold: float | None = None,
    count: int = 3,
    names: Sequence[str] | None = None,
    fpr_limit: float = 0.3,
    valid: Any | None = None,
) -> list[Path]:
    """ROC, PRO and overlay PNGs for one evaluated test set; returns the written paths.

    ``masks`` None (an image-level data set): no pixel curve and no PRO plot. ``valid``: the pixels the
    curves count (letterbox padding left out).
    """
    curves = pixel_curves(maps, masks, valid=valid) if masks is not None else None
    pro = [plot_pro_curve(maps, masks, out_dir, fpr_limit=fpr_limit, curves=curves)] if masks is not None else []
    return [
        plot_roc_curves(scores, labels, maps, masks, out_dir, curves=curves),
        *pro,
        *plot_overlays(images, maps, masks, scores, labels, out_dir, pixel_threshold, image_threshold, count, names),
    ]
