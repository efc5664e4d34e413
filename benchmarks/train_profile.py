"""Where a training epoch's time goes: phases of the step, the epoch's extras, and the top operators.

    .venv/bin/python benchmarks/train_profile.py [--runs rd,stfpm] [--threads 2] [--compile] [--tag cpu2]

Each run is ``vs_anomalib.py``'s (bottle 256 px, batch 8; rd: ResNet18 teacher with random weights; stfpm:
the ImageNet MobileNetV2 teacher), built the way the engine builds it (``Runtime.from_config``: bf16 autocast
and channels-last where bf16 is native; the teacher feature cache), trained one warm-up epoch and then one
measured epoch in three ways:

1. **phases**: the engine's step taken apart with a clock around each part (batch preparation, cached
   teacher rows, forward, loss, backward, optimiser), summed over the epoch; on CPU every op is synchronous,
   so the parts add up to the step (on CUDA the clock synchronises, which the engine's own step never does);
2. **extras**: the held-out loss (with and without cached teacher features) and the ``last.pt`` checkpoint,
   which the engine runs once per epoch besides the steps;
3. **operators**: ``torch.profiler`` over the measured epoch, the top operators by self time.

``--compile`` adds the same epoch with the student under ``torch.compile`` (first-epoch compile time against
the per-epoch saving). Writes benchmarks/results/train_profile-<tag>.json and a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

RUNS = {"rd": ("rd", "resnet18"), "stfpm": ("stfpm", "mobilenet_v2")}
PHASES = ("prepare", "teacher_rows", "forward", "loss", "backward", "optimizer")


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class Parts:
    """A run's model, optimiser, data and teacher cache, made as ``engine._Run._setup`` makes them."""

    def __init__(self, run: str, args: argparse.Namespace, out_dir: Path) -> None:
        from bottle_runs import bottle_config

        from adkd.models.zoo import build_model
        from adkd.pipelines.data.dataset import load_category
        from adkd.pipelines.train.feature_cache import plan_cache
        from adkd.pipelines.train.runtime import Runtime
        from adkd.pipelines.train.steps import build_optimizer

        model_name, backbone = RUNS[run]
        self.config = cfg = bottle_config(
            model_name, backbone, 2, out_dir / run, data=args.data, size=args.size, threads=args.threads,
            batch_size=args.batch, device=args.device,
        )  # fmt: skip
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        self.data = load_category(Path(cfg.data), cfg.category, cfg.image_size, val_fraction=cfg.val_fraction,
                                  seed=cfg.seed)  # fmt: skip
        self.rt = Runtime.from_config(cfg)
        self.model = self.rt.place(build_model(cfg.model, backbone=cfg.backbone, weights=cfg.weights))
        self.train_images = self.data.train[: args.images].to(self.rt.device)
        self.val_images = self.data.val.to(self.rt.device)
        self.notes: list[str] = []
        self.cache = plan_cache(cfg, self.model, self.train_images, self.rt, out_dir / run, self.notes)
        self.optimizer = build_optimizer(self.model, cfg)
        self.forward = self.model

    def epoch(self, seed: int, timers: dict[str, float] | None = None) -> int:
        """One epoch of the engine's steps; with ``timers``, each phase's seconds are added there."""
        from adkd.pipelines.train.runtime import autocast, batches, epoch_order

        rt, model, opt = self.rt, self.model, self.optimizer
        model.train()
        seen = 0
        t = timers if timers is not None else defaultdict(float)
        for idx in batches(epoch_order(len(self.train_images), self.config.seed, seed), self.config.batch_size):
            t0 = _clock(rt.device)
            x = rt.prepare(self.train_images[idx.to(rt.device)])
            t1 = _clock(rt.device)
            teacher = {"teacher": self.cache.batch(idx)} if self.cache is not None else {}
            t2 = _clock(rt.device)
            with autocast(rt.device, rt.amp):
                out = self.forward(x, **teacher)
                t3 = _clock(rt.device)
                loss = model.loss(out)
            t4 = _clock(rt.device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t5 = _clock(rt.device)
            opt.step()
            t6 = _clock(rt.device)
            for name, (a, b) in zip(PHASES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
                t[name] += b - a
            seen += len(idx)
        return seen

    def held_out(self, cached: bool) -> float:
        """Seconds of the engine's held-out loss over the validation images (teacher from a cache when asked)."""
        from adkd.pipelines.train.feature_cache import TeacherCache
        from adkd.pipelines.train.steps import held_out_loss

        cfg = self.config
        cache = None
        if cached:
            cache = TeacherCache(self.model, self.val_images, self.rt, cfg.eval_batch_size, False, Path())
            cache.batch(torch.arange(2))  # built once per run, as the engine does: not part of each epoch
        t0 = _clock(self.rt.device)
        held_out_loss(self.model, self.val_images, self.rt, cfg.eval_batch_size, cfg.seed, teacher=cache)
        return _clock(self.rt.device) - t0

    def checkpoint(self, folder: Path) -> float:
        from adkd.pipelines.train import checkpoint as ckpt

        t0 = time.perf_counter()
        state = ckpt.checkpoint_dict(self.model, self.config, {"epoch": 1},
                                     train_state={"optimizer": self.optimizer.state_dict()})  # fmt: skip
        ckpt.save_checkpoint(folder / "last.pt", state)
        return time.perf_counter() - t0


def top_operators(parts: Parts, seed: int, n: int = 12) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if parts.rt.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        parts.epoch(seed)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [
        {"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total}
        for e in rows[:n]
    ]


def profile_run(run: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    parts = Parts(run, args, out_dir)
    t0 = time.perf_counter()
    parts.epoch(0)  # warm-up: oneDNN primitive caches, the teacher cache's one build
    warm_s = time.perf_counter() - t0
    timers: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    seen = parts.epoch(1, timers)
    steps_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "images": seen,
        "first_epoch_s": warm_s,
        "steps_s": steps_s,
        "train_images_per_s": seen / steps_s,
        "phases_s": dict(timers),
        "held_out_s": parts.held_out(cached=False),
        "held_out_cached_s": parts.held_out(cached=True) if parts.cache is not None else None,
        "checkpoint_s": parts.checkpoint(out_dir / run),
        "val_images": len(parts.val_images),
        "notes": [parts.rt.describe(), *parts.notes],
        "operators": top_operators(parts, 2),
    }
    if args.compile:
        out["compiled"] = compiled_epochs(parts)
    return out


def compiled_epochs(parts: Parts, epochs: int = 3) -> dict[str, Any]:
    """The student under ``torch.compile``: the first epoch (with compilation) and the next ones."""
    parts.forward = torch.compile(parts.model)
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        seen = parts.epoch(10 + e)
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    return {"epoch_s": times, "images_per_s": seen / steady, "compile_s": times[0] - steady}


def table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"One epoch of training per run, {meta['machine']}, {meta['threads']} threads, {meta['size']} px, batch "
        f"{meta['batch']}, load {meta['load']} (`{meta['command']}`):",
        "",
        "| run | img/s | " + " | ".join(PHASES) + " | held-out loss (cached teacher) | checkpoint |",
        "|---|---|" + "---|" * len(PHASES) + "---|---|",
    ]
    for run, r in results.items():
        steps = r["steps_s"]
        shares = " | ".join(f"{100 * r['phases_s'][p] / steps:.0f} %" for p in PHASES)
        held = f"{r['held_out_s']:.2f} s" + (
            f" ({r['held_out_cached_s']:.2f} s)" if r.get("held_out_cached_s") is not None else ""
        )
        lines.append(
            f"| {run} | {r['train_images_per_s']:.1f} | {shares} | {held} ({r['val_images']} images) | "
            f"{r['checkpoint_s']:.2f} s |"
        )
    lines += ["", "Phases as shares of the epoch's steps; the held-out loss and the checkpoint run once per epoch "
              "besides them.", ""]  # fmt: skip
    for run, r in results.items():
        ops = ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in r["operators"][:8])
        lines.append(f"- {run}, top operators by self time: {ops}")
        if "compiled" in r:
            c = r["compiled"]
            lines.append(
                f"- {run}, torch.compile of the model: {c['images_per_s']:.1f} img/s after the first epoch "
                f"({c['images_per_s'] / r['train_images_per_s']:.2f}x eager), compilation {c['compile_s']:.0f} s"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="rd,stfpm")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mvtec_ad_256"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--images", type=int, default=None, help="train on the first N images only (quick profiles)")
    p.add_argument("--tag", default="cpu2")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    from results_md import write_section

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs.split(","):
            results[run] = profile_run(run, args, Path(tmp))
            print(run, json.dumps(results[run], default=str)[:3000], flush=True)
    meta = {
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "size": args.size,
        "batch": args.batch,
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "benchmarks/train_profile.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"train_profile-{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    text = table(results, meta)
    if args.out == REPO / "benchmarks" / "results":
        write_section(f"train_profile-{args.tag}", "### Where a training epoch goes\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
