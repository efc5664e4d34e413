"""GPU throughput table: train and inference images/s and peak memory, bf16 autocast on and off.

    python benchmarks/gpu_throughput.py --out DIR [--dry-run]

Rows: rd and mrkd with wide_resnet50_2 at 256 px, stfpm with resnet18 at 256 px (random weights: the
speed does not depend on them), batch 64, the engine's own training step (``train_step``) with and
without teacher features passed in (what the teacher cache saves), and its ``predict``. ``--dry-run``:
CPU, 32 px, resnet18, batch 2, one step: checks the script end to end without a GPU.
Writes DIR/gpu_throughput.json and DIR/gpu_throughput.md (a RESULTS.md section).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from adkd.models.zoo import build_model
from adkd.pipelines.inference.torch_scoring import predict
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import build_optimizer, train_step

FULL = [("rd", "wide_resnet50_2"), ("mrkd", "wide_resnet50_2"), ("stfpm", "resnet18")]
DRY = [("rd", "resnet18"), ("mrkd", "resnet18"), ("stfpm", "resnet18")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Any, steps: int, device: torch.device) -> float:
    """Median seconds of ``steps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(model_name: str, backbone: str, size: int, batch: int, steps: int, rt: Runtime) -> dict[str, Any]:
    config = TrainConfig(category="x", data="x", model=model_name, backbone=backbone, weights="none")
    model = rt.place(build_model(model_name, backbone=backbone, weights="none"))
    optimizer = build_optimizer(model, config)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=rt.device)
    x = rt.prepare(images)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    train_s = _timed(lambda: train_step(model, optimizer, x, rt), steps, rt.device)
    with torch.no_grad(), torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.amp):
        teacher = list(model.teacher(x))
    cached_s = _timed(lambda: train_step(model, optimizer, x, rt, teacher=teacher), steps, rt.device)
    peak_train = torch.cuda.max_memory_allocated() / 2**20 if rt.device.type == "cuda" else None
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    infer_s = _timed(lambda: predict(model, images, rt, batch_size=batch), steps, rt.device)
    peak_infer = torch.cuda.max_memory_allocated() / 2**20 if rt.device.type == "cuda" else None
    return {
        "model": model_name,
        "backbone": backbone,
        "size": size,
        "batch": batch,
        "bf16": rt.amp,
        "channels_last": rt.channels_last,
        "train_images_per_s": batch / train_s,
        "train_cached_images_per_s": batch / cached_s,
        "infer_images_per_s": batch / infer_s,
        "peak_train_mib": peak_train,
        "peak_infer_mib": peak_infer,
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    head = (
        f"GPU throughput on {env['device_name']} (torch {env['torch']}, {env['mode']}), batch {rows[0]['batch']}, "
        f"median of {env['steps']} steps (`benchmarks/gpu_check.sh`):\n\n"
        "| model | backbone | px | bf16 | train img/s | train img/s, cached teacher | infer img/s "
        "| peak train MiB | peak infer MiB |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['backbone']} | {r['size']} | {'on' if r['bf16'] else 'off'} | "
        f"{_fmt(r['train_images_per_s'])} | {_fmt(r['train_cached_images_per_s'])} | {_fmt(r['infer_images_per_s'])} | "
        f"{_fmt(r['peak_train_mib'])} | {_fmt(r['peak_infer_mib'])} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script without a GPU")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput: no CUDA GPU visible; use --dry-run on a CPU machine")
    device = torch.device("cpu" if args.dry_run else "cuda")
    specs, size, batch = (DRY, 32, 2) if args.dry_run else (FULL, 256, 64)
    steps = args.steps or (1 if args.dry_run else 10)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for model_name, backbone in specs:
        for bf16 in (False, True):
            rt = Runtime(device=device, amp=bf16, channels_last=device.type == "cuda")
            rows.append(measure(model_name, backbone, size, batch, steps, rt))
            print(json.dumps(rows[-1]), flush=True)
    env = {
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "mode": "dry run on CPU" if args.dry_run else "CUDA",
        "steps": steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_throughput.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    (args.out / "gpu_throughput.md").write_text(markdown(rows, env))


if __name__ == "__main__":
    main()
