"""Tiled against untiled on the real bottle at 512 px: accuracy, speed and peak memory of each (issue 24).

Each configuration trains in its own `adkd train` process (stfpm, preset bottle-mobilenet, the ImageNet
MobileNetV2 teacher in ../shared/weights, no tracking), so its peak resident memory is its own. Untiled runs
squash the 512 px images to 128 or 256 px and are scored at that size (masks resized with them); the tiled run
trains on 256 px tiles of the 512 px images and is scored on the stitched 512 px maps against 512 px masks.

Training images/s counts whole images (a tiled epoch's tiles divided by the tiles per image); inference
images/s is whole test images through the exported ONNX model with ONNX Runtime (1000 / test ms per image).

    .venv/bin/python benchmarks/tiling_bottle.py --epochs 3 --out benchmarks/results/tiling-bottle512.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "mvtec_ad_512"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
ROWS = {
    "untiled 128 px": (["image_size=128"], 1),
    "untiled 256 px": (["image_size=256"], 1),
    "tiled 256 px tiles, 512 px (own size)": (["tiling.tile_size=256", "tiling.stride=256"], 4),
}


def run(label: str, sets: list[str], tiles_per_image: int, epochs: int, threads: int, work: Path) -> dict:
    adkd = Path(sys.executable).with_name("adkd")
    out = work / label.split()[0] / label.split()[1]
    overrides = [f"weights={WEIGHTS}", f"epochs={epochs}", f"num_threads={threads}", "skip_validation=true", *sets]
    cmd = [str(adkd), "train", "-m", "stfpm", "-c", "bottle", "--data", str(DATA), "--preset", "bottle-mobilenet",
           "--no-tracking", "--out", str(out)]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "stfpm" / "bottle" / "metrics.json").read_text())
    return {
        "label": label,
        "settings": sets,
        "image_auroc": metrics["test/image_auroc"],
        "pixel_auroc": metrics["test/pixel_auroc"],
        "aupro": metrics["test/aupro"],
        "train_images_per_s": metrics["train/images_per_s"] / tiles_per_image,
        "inference_images_per_s": 1000.0 / metrics["test/ms_per_image"],
        "peak_rss_mb": metrics["memory/peak_rss_mb"],
        "train_s": metrics["time/train_s"],
        "wall_s": wall,
    }


def table(rows: list[dict]) -> str:
    head = "| run | image AUROC | pixel AUROC | AUPRO | train images/s | inference images/s | peak memory (MB) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {100 * r['image_auroc']:.1f} | {100 * r['pixel_auroc']:.1f} | {100 * r['aupro']:.1f} "
            f"| {r['train_images_per_s']:.2f} | {r['inference_images_per_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiling-bottle512.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adkd-tiling-") as tmp:
        rows = [run(label, sets, n, args.epochs, args.threads, Path(tmp)) for label, (sets, n) in ROWS.items()]
    record = {"epochs": args.epochs, "threads": args.threads, "data": str(DATA), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
