"""Evaluation speed: AUPRO and pixel AUROC over 100 anomaly maps of 256x256 with blob masks.

    .venv/bin/python benchmarks/eval_speed.py [--images 100] [--size 256] [--repeats 5]

Writes benchmarks/results/eval_speed.json and prints a markdown table row. The goal (issue 4)
is AUPRO under 1 s on this CPU. scikit-learn's roc_auc_score on the same pixels is timed once
as a reference, and its value checks ours. Wall and CPU seconds are both recorded: the machine
is shared, so wall time moves with the load (recorded too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from adkd.pipelines.evaluate.metrics import aupro, compute_metrics, pixel_auroc, pixel_curves

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "eval_speed.json"


def make_maps(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noise maps; half the images get 1-3 elliptical defects that raise the map inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2, n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 50, size / 8, 2)
            masks[i] |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 4, 4))
    signal = ndimage.gaussian_filter(masks.astype(np.float64), sigma=(0, 2, 2))
    maps = (noise / noise.std() + 2.0 * signal * rng.uniform(0.2, 1.5, (n, 1, 1))).astype(np.float32)
    return maps, masks


def timed(fn: Callable[[], object], repeats: int) -> dict:
    """Median and best wall/CPU seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "wall_median_s": statistics.median(wall),
        "wall_min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    maps, masks = make_maps(args.images, args.size)
    scores = maps.max(axis=(1, 2))
    labels = masks.reshape(len(masks), -1).max(axis=1)
    curves = pixel_curves(maps, masks)
    load_before = os.getloadavg()[0]

    results = {
        "aupro": timed(lambda: aupro(maps, masks), args.repeats),
        "pixel_auroc": timed(lambda: pixel_auroc(maps, masks), args.repeats),
        "compute_metrics": timed(lambda: compute_metrics(maps, scores, masks, labels), args.repeats),
    }
    t0 = time.perf_counter()
    sklearn_value = float(roc_auc_score(masks.ravel(), maps.ravel()))
    results["sklearn_roc_auc_score_pixel"] = {"wall_s": time.perf_counter() - t0, "repeats": 1}

    values = compute_metrics(maps, scores, masks, labels)
    if abs(values["pixel_auroc"] - sklearn_value) > 1e-9:
        raise SystemExit(f"pixel AUROC {values['pixel_auroc']} disagrees with scikit-learn {sklearn_value}")
    report = {
        "benchmark": "eval_speed",
        "maps": [args.images, args.size, args.size],
        "pixels": int(maps.size),
        "defect_regions": curves.n_regions,
        "anomalous_pixel_fraction": curves.n_anomalous / maps.size,
        "distinct_thresholds": int(curves.fp.size),
        "metrics": values,
        "sklearn_pixel_auroc": sklearn_value,
        "timings": results,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_1min": [load_before, os.getloadavg()[0]],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    shape = "×".join(map(str, report["maps"]))
    print("| maps | AUPRO s | pixel AUROC s | all 4 metrics s | sklearn pixel AUROC s | AUPRO | goal |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {shape} | {results['aupro']['wall_median_s']:.3f} | {results['pixel_auroc']['wall_median_s']:.3f} "
        f"| {results['compute_metrics']['wall_median_s']:.3f} "
        f"| {results['sklearn_roc_auc_score_pixel']['wall_s']:.2f} | {values['aupro']:.4f} "
        f"| AUPRO < 1 s: {'met' if results['aupro']['wall_median_s'] < 1 else 'missed'} |"
    )
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
