"""Evaluation figures as PNG files: ROC curves, the PRO curve, and per-image overlays.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display),
so they are safe in worker processes and headless servers.
"""

from __future__ import annotations

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
            fig = _overlay_figure(rgb[i], m[i], g[i], pixel_threshold, (vmin, vmax), title)
            paths.append(_save(fig, Path(out_dir) / f"overlay_{kind}_{rank:02d}_{i:04d}.png"))
    return paths


def _overlay_figure(
    image: np.ndarray,
    amap: np.ndarray,
    mask: np.ndarray,
    pixel_threshold: float,
    limits: tuple[float, float],
    title: str,
) -> Figure:
    # A fixed grid, not layout="constrained": the panels never change, and the constrained solver took half of
    # the six overlays' time (0.8 of 1.7 s per training, py-spy) for the same picture.
    fig = Figure(figsize=(12, 3.4))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.12)
    axes = fig.subplots(1, 4)
    axes[0].imshow(image)
    axes[0].set_title("image", y=1.0)
    axes[1].imshow(image)
    heat = axes[1].imshow(amap, cmap="jet", alpha=0.5, vmin=limits[0], vmax=limits[1])
    fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.02, format="%.3g")
    axes[1].set_title("anomaly map", y=1.0)
    axes[2].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("ground truth", y=1.0)
    predicted = amap >= pixel_threshold
    axes[3].imshow(image)
    axes[3].imshow(np.ma.masked_where(~predicted, predicted), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
    if mask.any():
        axes[3].contour(mask, levels=[0.5], colors="lime", linewidths=1)
    axes[3].set_title(f"prediction (map >= {pixel_threshold:.3g})", y=1.0)
    for ax in axes:
        ax.set_axis_off()
    # Titles at a given height (y=1.0): matplotlib's automatic title placement measures every axis' ticks on
    # each draw, which the axes switched off here do not have.
    fig.suptitle(title, fontsize=9)
    return fig


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
