"""CPU speed-ups, measured alternately back to back: channels-last, bf16 autocast, and the batch preparation.

    .venv/bin/python benchmarks/cpu_paths.py [--model stfpm] [--backbone resnet18] [--size 128] [--batch 8]
        [--rounds 3] [--steps 3] [--out benchmarks/results/cpu_paths.json]

Each round runs every variant once (``steps`` timed training steps after a warm-up), in turn, so a change
of machine load hits all variants alike; the table reports the median over rounds. bf16 is only offered
where the CPU reports avx512_bf16 (or AMX). The "prepare" rows time ``Runtime.prepare`` (uint8 -> normalised
float on the batch) against a fused in-place variant. On a shared machine read the ratios, not the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from adkd.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from adkd.models.zoo import build_model
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import build_optimizer, train_step


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fused_prepare(images: torch.Tensor) -> torch.Tensor:
    """One allocation: float copy, then scale and shift in place."""
    scale = torch.tensor([1 / (255 * s) for s in IMAGENET_STD]).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    return images.float().mul_(scale).add_(shift)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="stfpm")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_paths.json"))
    args = p.parse_args()

    variants = {"fp32": (False, False), "channels_last": (False, True)}
    if cpu_has_bf16():
        variants |= {"bf16": (True, False), "bf16+channels_last": (True, True)}
    config = TrainConfig(category="x", data="x", model=args.model, backbone=args.backbone, weights="none")
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    setups = {}
    for name, (amp, cl) in variants.items():
        torch.manual_seed(0)
        rt = Runtime(torch.device("cpu"), amp=amp, channels_last=cl)
        model = rt.place(build_model(args.model, backbone=args.backbone, weights="none")).train()
        setups[name] = (rt, model, build_optimizer(model, config))
    times: dict[str, list[float]] = {name: [] for name in [*variants, "prepare", "prepare_fused"]}
    losses: dict[str, float] = {}
    rt0 = setups["fp32"][0]
    for _ in range(args.rounds):
        for name, (rt, model, opt) in setups.items():
            x = rt.prepare(images)
            losses[name] = float(train_step(model, opt, x, rt))  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, opt, x, rt)
            times[name].append((time.perf_counter() - t0) / args.steps)
        for name, fn in (("prepare", rt0.prepare), ("prepare_fused", fused_prepare)):
            t0 = time.perf_counter()
            for _ in range(20):
                fn(images)
            times[name].append((time.perf_counter() - t0) / 20)
    same = float((fused_prepare(images) - rt0.prepare(images)).abs().max())
    rows = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "seconds_per_step": rows,
        "images_per_s": {n: args.batch / s for n, s in rows.items() if not n.startswith("prepare")},
        "first_step_loss": losses,
        "prepare_max_abs_diff": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    base = rows["fp32"]
    print(f"{args.model} {args.backbone} {args.size}px batch {args.batch}, {torch.get_num_threads()} threads")
    print("| variant | s/step | images/s | vs fp32 |\n|---|---|---|---|")
    for name in variants:
        print(f"| {name} | {rows[name]:.3f} | {args.batch / rows[name]:.2f} | {base / rows[name]:.2f}x |")
    prep, fused = 1000 * rows["prepare"], 1000 * rows["prepare_fused"]
    print(f"prepare: {prep:.2f} ms, fused {fused:.2f} ms (max diff {same:.1e})")


if __name__ == "__main__":
    main()
