"""Training throughput (images/s) and inference latency (ms/image) per model, backbone and size.

    .venv/bin/python benchmarks/train_speed.py [--models rd,mrkd,stfpm,stfpm-ae]
        [--backbones resnet18,mobilenet_v2] [--sizes 64,128] [--batch 8] [--steps 5]
        [--device auto] [--threads N] [--tag cpu]

Random teacher weights (the speed does not depend on them) and random images, the engine's own
training step (forward, loss, backward, optimiser step, bf16 autocast + channels_last on CUDA).
Writes benchmarks/results/train_speed-<tag>.json and the table into benchmarks/RESULTS.md.
Wall and CPU time are both recorded: on a shared CPU the wall time moves with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from results_md import RESULTS_MD, write_results, write_section  # benchmarks/ is on sys.path when run

from adkd.models.zoo import build_model
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.runtime import Runtime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    model_name: str, backbone: str, size: int, batch: int, steps: int, rt: Runtime
) -> dict[str, float | int | str]:
    """Median-free simple timing: one warm-up step, then ``steps`` timed steps / batches."""
    options = {"image_size": size} if model_name == "stfpm-ae" else {}
    model = rt.place(build_model(model_name, backbone=backbone, weights="none", **options))
    params = [p for group in model.param_groups().values() for p in group]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    autocast = torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.amp)

    def train_step() -> None:
        x = rt.prepare(images)
        with autocast:
            loss = model.loss(model(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    train_step()
    _sync(rt.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step()
    _sync(rt.device)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu

    model.eval()
    with torch.inference_mode():
        x = rt.prepare(images)
        with autocast:
            model(x)
        _sync(rt.device)
        wall = time.perf_counter()
        for _ in range(steps):
            with autocast:
                model(rt.prepare(images))
        _sync(rt.device)
        infer_wall = time.perf_counter() - wall
    n = steps * batch
    return {
        "model": model_name,
        "backbone": backbone,
        "size": size,
        "batch": batch,
        "train_images_per_s": n / train_wall,
        "train_cpu_s_per_image": train_cpu / n,
        "infer_ms_per_image": 1000 * infer_wall / n,
    }


def table(rows: list[dict], meta: dict) -> str:
    head = (
        f"Device: {meta['device']} ({meta['threads']} threads, load {meta['load']}), "
        f"amp={meta['amp']}, channels_last={meta['channels_last']}, batch {rows[0]['batch'] if rows else '-'}.\n\n"
        "| model | backbone | size | train images/s | train CPU s/image | inference ms/image |\n"
        "|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['backbone']} | {r['size']} | {r['train_images_per_s']:.1f} | "
        f"{r['train_cpu_s_per_image']:.3f} | {r['infer_ms_per_image']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rd,mrkd,stfpm,stfpm-ae")
    ap.add_argument("--backbones", default="resnet18,mobilenet_v2")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tag", default=None, help="Result name; default: the device type.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = Runtime.from_config(TrainConfig(category="x", data="x", model="rd", device=args.device))
    rows = []
    for model_name in args.models.split(","):
        for backbone in args.backbones.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                row = measure(model_name, backbone, size, args.batch, args.steps, rt)
                print(json.dumps(row), flush=True)
                rows.append(row)
    device = torch.cuda.get_device_name() if rt.device.type == "cuda" else platform.processor() or "cpu"
    meta = {
        "device": device,
        "threads": torch.get_num_threads(),
        "load": f"{os.getloadavg()[0]:.1f}",
        "amp": rt.amp,
        "channels_last": rt.channels_last,
        "torch": torch.__version__,
    }
    tag = args.tag or rt.device.type
    out = write_results(f"train_speed-{tag}", {"benchmark": "train_speed", "meta": meta, "rows": rows})
    write_section(f"train_speed-{tag}", f"### Training and inference speed ({tag})\n\n" + table(rows, meta))
    print(f"wrote {out} and {RESULTS_MD}")


if __name__ == "__main__":
    main()
