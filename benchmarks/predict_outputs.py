"""Where `adkd predict`'s time goes per image: decoding, scoring, and writing the overlay and mask PNGs.

    .venv/bin/python benchmarks/predict_outputs.py [--threads 2] [--tag cpu2]

The predict loop of ``adkd.cli.predict_cmd`` on the real bottle test split (83 images) at 256 and 512 px, with
an stfpm model (the ImageNet MobileNetV2 teacher of ../shared, untrained student: the speed does not depend on
it) exported at 128 px: ``predictor.load`` (decode and resize), ``predictor.predict_loaded`` in batches of 8
(maps back at each image's own size) and ``write_image_outputs`` (overlay and mask PNGs at each image's own
size), the last as adkd writes them and as it did before 2026-12-07 (Pillow's default zlib level 6, float64
colours: ``writes_as_before``), taking turns per image; then the whole loop (``predict_files``) with the writes
inline against on writer threads beside the scoring. Writes benchmarks/results/predict_outputs-<tag>.json and a
RESULTS.md section with ``--tag``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data"
THRESHOLDS = {"image": 1.0, "pixel": 1.0, "score_min": 0.0, "score_max": 2.0}
PILLOW_DEFAULT = 6


def model_file(out: Path) -> Path:
    from bottle_runs import MOBILENET_WEIGHTS

    from adkd.models.zoo import build_model
    from adkd.pipelines.export.onnx_export import export_onnx

    model = build_model("stfpm", backbone="mobilenet_v2", weights=str(MOBILENET_WEIGHTS)).eval()
    return export_onnx(model, out / "model.onnx", 128, THRESHOLDS, {"model": "stfpm", "category": "bottle"})


def float64_overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """``heatmap_overlay`` as adkd wrote it before 2026-12-07: float64 colours from the colormap, then the blend."""
    import matplotlib

    scaled = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    colours = matplotlib.colormaps["jet"](scaled)[..., :3] * 255.0
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).clip(0, 255).astype(np.uint8)


@contextlib.contextmanager
def writes_as_before() -> Iterator[None]:
    """``write_image_outputs`` as before 2026-12-07: Pillow's default zlib level, float64 colours."""
    from adkd.pipelines.predict import outputs

    saved = outputs.PNG_LEVEL, outputs.heatmap_overlay
    outputs.PNG_LEVEL, outputs.heatmap_overlay = PILLOW_DEFAULT, float64_overlay
    try:
        yield
    finally:
        outputs.PNG_LEVEL, outputs.heatmap_overlay = saved


def measure(predictor: Any, files: list[Path], out: Path) -> dict[str, Any]:
    """ms per image of each phase (the overlay's blend alone too), writes now and as before; the files' sizes."""
    from adkd.pipelines.predict import outputs

    vmin, vmax = predictor.heat_range
    names = ("decode", "score", "write", "write_before", "blend", "blend_before")
    phases: dict[str, list[float]] = {k: [] for k in names}
    sizes: dict[str, list[int]] = {"write": [], "write_before": []}
    for start in range(0, len(files), 8):
        chunk = files[start : start + 8]
        t0 = time.perf_counter()
        loaded = [predictor.load(p) for p in chunk]
        phases["decode"].append((time.perf_counter() - t0) / len(chunk))
        t0 = time.perf_counter()
        preds = predictor.predict_loaded(loaded, [str(p) for p in chunk])
        phases["score"].append((time.perf_counter() - t0) / len(chunk))
        for i, (item, pred) in enumerate(zip(loaded, preds)):
            order = [("write", contextlib.nullcontext), ("write_before", writes_as_before)]
            for key, how in order if i % 2 else order[::-1]:
                with how():
                    t0 = time.perf_counter()
                    overlay, mask = outputs.write_image_outputs(
                        pred, item.original, out / key, f"{start + i}", vmin, vmax
                    )
                    phases[key].append(time.perf_counter() - t0)
                sizes[key].append(overlay.stat().st_size + mask.stat().st_size)
            for key, blend in (("blend", outputs.heatmap_overlay), ("blend_before", float64_overlay)):
                t0 = time.perf_counter()
                blend(item.original, pred.anomaly_map, vmin, vmax)
                phases[key].append(time.perf_counter() - t0)
    row = {f"{k}_ms": 1e3 * statistics.median(v) for k, v in phases.items()}
    row |= {f"{k}_kib": statistics.mean(v) / 1024 for k, v in sizes.items()}
    row["images"] = len(files)
    return row


def end_to_end(predictor: Any, files: list[Path], out: Path, rounds: int = 3) -> dict[str, float]:
    """ms per image of ``predict_files`` (decode, score, write) with the writes inline and on writer threads."""
    from adkd.pipelines.predict.folder import default_writers, predict_files

    modes = {"inline": 0, f"{default_writers()} writer threads": None}
    times: dict[str, list[float]] = {k: [] for k in modes}
    for r in range(rounds):
        for key in list(modes) if r % 2 else list(modes)[::-1]:
            t0 = time.perf_counter()
            predict_files(predictor, files, out / f"{r}-{modes[key]}", writers=modes[key])
            times[key].append(1e3 * (time.perf_counter() - t0) / len(files))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="", help="Write results/predict_outputs-<tag>.json and a RESULTS.md section.")
    args = p.parse_args()
    from adkd.pipelines.predict import open_predictor
    from adkd.pipelines.predict.outputs import PNG_LEVEL

    load_before = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        predictor = open_predictor(model_file(Path(tmp)), "onnxruntime", threads=args.threads)
        for side in (256, 512):
            files = sorted((DATA / f"mvtec_ad_{side}" / "bottle" / "test").rglob("*.png"))
            rows[side] = row = measure(predictor, files, Path(tmp) / str(side))
            row["end_to_end_ms"] = end_to_end(predictor, files, Path(tmp) / f"e2e{side}")
            total, before = (row["decode_ms"] + row["score_ms"] + row[k] for k in ("write_ms", "write_before_ms"))
            phases = f"decode {row['decode_ms']:.1f}, score {row['score_ms']:.1f}, write {row['write_ms']:.1f}"
            print(f"{side} px: {phases} (before: {row['write_before_ms']:.1f}) ms/image; {total:.1f} against "
                  f"{before:.1f}; end to end {row['end_to_end_ms']}", flush=True)  # fmt: skip
    if not args.tag:
        return
    from results_md import load_span, write_results, write_section

    load = load_span(load_before)
    write_results(f"predict_outputs-{args.tag}", {"rows": rows, "load": load})
    lines = [
        "### Where `adkd predict`'s time goes per image",
        "",
        f"Real bottle test split, stfpm at 128 px (ImageNet MobileNetV2 teacher), ONNX Runtime, {args.threads} "
        f"threads, batches of 8, medians; load {load} (`benchmarks/predict_outputs.py --tag {args.tag}`). "
        f"Overlay and mask PNGs at each image's own size, written as adkd does (zlib level {PNG_LEVEL}, the "
        f"colormap's uint8 table) and as before 2026-12-07 (level {PILLOW_DEFAULT}, Pillow's default; float64 "
        "colours); the overlay's blend alone in the last two columns:",
        "",
        "| input | decode ms | score ms | write ms | before | ms/image | before | KiB | before | blend ms | before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side, r in rows.items():
        now = r["decode_ms"] + r["score_ms"] + r["write_ms"]
        before = r["decode_ms"] + r["score_ms"] + r["write_before_ms"]
        lines.append(
            f"| {side} px | {r['decode_ms']:.1f} | {r['score_ms']:.1f} | {r['write_ms']:.1f} | "
            f"{r['write_before_ms']:.1f} | {now:.1f} | {before:.1f} | {r['write_kib']:.0f} | "
            f"{r['write_before_kib']:.0f} | {r['blend_ms']:.1f} | {r['blend_before_ms']:.1f} |"
        )
    lines += [
        "",
        "The whole loop (`adkd.pipelines.predict.folder.predict_files`, 3 alternating runs, median ms/image):",
        "",
    ]
    for side, r in rows.items():
        lines.append(f"- {side} px: " + ", ".join(f"{k} {v:.1f}" for k, v in r["end_to_end_ms"].items()))
    write_section(f"predict_outputs-{args.tag}", "\n".join(lines))


if __name__ == "__main__":
    main()
