"""Data loading speed: the first load of a category (PNG decode + resize) against cached epochs.

    .venv/bin/python benchmarks/data_loading.py [--root ../shared/data/mvtec_ad_256] [--category bottle]

Writes benchmarks/results/data_loading.json and prints a markdown table. The OS page cache is not
dropped (that needs root), so "first load" measures decoding, not disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from adkd.pipelines.data import dataset
from adkd.pipelines.data.images import decode_workers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".." / "shared" / "data" / "mvtec_ad_256"


def first_load(root: Path, category: str, size: int, workers: int) -> dict:
    os.environ["ADKD_DECODE_WORKERS"] = str(workers)
    dataset.clear_cache()
    t0, c0 = time.perf_counter(), time.process_time()
    data = dataset.load_category(root, category, image_size=size)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    images = len(data.train) + len(data.val) + len(data.test)
    masks = int(data.test_labels.sum())
    return {"images": images, "masks": masks, "seconds": seconds, "cpu_seconds": cpu,
            "images_per_s": images / seconds, "images_per_cpu_s": images / cpu}  # fmt: skip


def cached_epochs(root: Path, category: str, size: int, epochs: int, batch_size: int) -> dict:
    """What a training epoch costs once decoded: the cache lookup, a shuffle and float batches."""
    t0, c0 = time.perf_counter(), time.process_time()
    seen = 0
    for epoch in range(epochs):
        data = dataset.load_category(root, category, image_size=size)
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), batch_size):
            batch = data.train[order[start : start + batch_size]].float().div_(255)
            seen += batch.shape[0]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"epochs": epochs, "images": seen, "seconds": seconds, "cpu_seconds": cpu,
            "images_per_s": seen / seconds, "images_per_cpu_s": seen / cpu}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "data_loading.json")
    args = parser.parse_args()
    if not (args.root / args.category / "train" / "good").is_dir():
        raise SystemExit(f"no category {args.category} under {args.root}: pass --root and --category")
    torch.set_num_threads(1)  # batches are small copies; extra threads only contend
    threads = decode_workers()
    rows = []
    for size in args.sizes:
        for workers in sorted({1, threads}):
            rows.append({"size": size, "phase": f"first load, {workers} thread(s)",
                         **first_load(args.root, args.category, size, workers)})  # fmt: skip
        rows.append({"size": size, "phase": f"cached epoch (batch {args.batch_size})",
                     **cached_epochs(args.root, args.category, size, args.epochs, args.batch_size)})  # fmt: skip
    os.environ.pop("ADKD_DECODE_WORKERS", None)
    dataset.clear_cache()
    result = {
        "benchmark": "data_loading",
        "root": str(args.root.resolve()),
        "category": args.category,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "load_average": os.getloadavg()[0],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| category | size | phase | images | wall s | images/s | CPU s | images/CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {args.category} | {r['size']} | {r['phase']} | {r['images']} | {r['seconds']:.2f} | "
              f"{r['images_per_s']:,.0f} | {r['cpu_seconds']:.2f} | {r['images_per_cpu_s']:,.0f} |")  # fmt: skip
    print(f"\nwritten to {args.out} (load average {result['load_average']:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
