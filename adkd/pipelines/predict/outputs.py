"""What `adkd predict` writes per image (overlay, mask) and per call (CSV, JSON summary)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adkd.pipelines.predict.onnx_predictor import Prediction

CSV_FIELDS = ("image", "score", "normalized_score", "verdict", "overlay", "mask", "notes")
# zlib level 1 for the PNGs written per image: a 512 px image's overlay and mask are written 4x faster than at
# Pillow's default (6), for files about a fifth larger; at 6 the writing took 90 % of `adkd predict`'s time per
# image (benchmarks/predict_outputs.py).
PNG_LEVEL = 1


def heatmap_overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """The image blended with a jet heatmap of ``amap`` scaled to [vmin, vmax] (uint8 [H,W,3])."""
    import matplotlib

    span = max(vmax - vmin, 1e-12)
    scaled = np.clip((amap - vmin) / span, 0.0, 1.0)
    # The colormap's own uint8 table and a float32 blend: 1.7x faster than float64 colours on 512 px images (a
    # channel differs by at most 1; benchmarks/predict_outputs.py).
    colours = matplotlib.colormaps["jet"](scaled, bytes=True)[..., :3]
    weight = np.float32(alpha)
    return (image * (np.float32(1.0) - weight) + colours * weight + np.float32(0.5)).astype(np.uint8)


def _atomic_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, path)


def unique_stem(source: Path, used: set[str]) -> str:
    """A file stem unique within one output folder (same names in different folders get a parent prefix)."""
    stem = source.stem
    if stem in used:
        stem = f"{source.parent.name}_{source.stem}"
    base, n = stem, 1
    while stem in used:
        n += 1
        stem = f"{base}_{n}"
    used.add(stem)
    return stem


def write_image_outputs(
    pred: Prediction, image: np.ndarray, out_dir: Path, stem: str, vmin: float, vmax: float
) -> tuple[Path, Path]:
    """Overlay and binary mask PNGs for one prediction."""
    overlay_path = out_dir / "overlays" / f"{stem}.png"
    mask_path = out_dir / "masks" / f"{stem}.png"
    overlay_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    h, w = pred.anomaly_map.shape
    if image.shape[:2] != (h, w):  # the model scored a centre crop: overlay that crop
        top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
        image = image[top : top + h, left : left + w]
    _atomic_png(heatmap_overlay(image, pred.anomaly_map, vmin, vmax), overlay_path)
    _atomic_png(pred.mask.astype(np.uint8) * 255, mask_path)
    return overlay_path, mask_path


def write_summary(
    rows: list[dict[str, Any]], failures: list[dict[str, str]], meta: dict[str, Any], out_dir: Path
) -> None:
    """predictions.csv (a row per input: an image that could not be scored has verdict ``failed`` and its error in
    ``notes``) and summary.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".predictions.csv.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        writer.writerows({"image": f["image"], "verdict": "failed", "notes": f["error"]} for f in failures)
    os.replace(tmp, out_dir / "predictions.csv")
    summary = {
        "model": meta,
        "n_images": len(rows),
        "n_anomalous": sum(r["verdict"] == "anomalous" for r in rows),
        "n_failed": len(failures),
        "predictions": rows,
        "failures": failures,
    }
    tmp = out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, out_dir / "summary.json")
