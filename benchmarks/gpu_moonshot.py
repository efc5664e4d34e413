"""The GPU moonshot: how fast adkd trains rd on one GPU, and how much of the chip that is.

    python benchmarks/gpu_moonshot.py --out DIR [--data ROOT] [--dry-run] [--parts steps,cached_run,categories,ddp]

Parts (each under the time it is given; a failed part is recorded and the next one runs):

- ``steps``: the engine's training step of rd WideResNet50 at 256 px, batch 64, bf16 autocast and channels-last,
  with the teacher's features passed in (what the teacher cache feeds it), as: eager; ``torch.compile`` of the
  model (the compile time is recorded against the per-step saving); ``torch.compile(mode="reduce-overhead")``
  (CUDA graphs over the compiled graphs). Images/s and MFU: the step's FLOPs (counted once with
  ``torch.utils.flop_counter`` on the eager step, forward and backward) per second, over the chip's dense
  bf16 peak (``PEAK_BF16``).
- ``cached_run``: the same model trained end to end by ``train_category`` (teacher cache on, the defaults on
  CUDA) for a few epochs on ``--data``'s first category: the engine's own ``train/images_per_s`` (steps alone,
  epochs 2+) and ``epoch_time_s`` (with the held-out loss and the checkpoint), and the run's peak GPU memory.
- ``categories``: ``adkd train --categories ...`` at ``--gpus-per-worker 0.25``: several categories at once on
  the one GPU through Ray, timed from the command's start to its end, with each run's images/s.
- ``ddp``: with two GPUs or more, one category trained by two data-parallel workers (``--workers-per-run 2``);
  skipped with a note on one GPU.

``--data``: an MVTec-layout root (the real bottle, carried into a git-ignored folder, see gpu_bundle.sh);
categories it lacks are made with ``adkd data synth`` at 256 px beside it. ``--dry-run``: CPU, resnet18, 32 px,
batch 2, one epoch, no compile: checks the script end to end. Writes DIR/gpu_moonshot.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("steps", "cached_run", "categories", "ddp")
# Dense bf16 tensor-core peak, FLOP/s, by the name CUDA reports (the vendors' data sheets; sparsity not counted).
PEAK_BF16 = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12, "L4": 121.0e12}


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_step_s(fn: Any, steps: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_flops(step: Any) -> float:
    """FLOPs of one training step (forward and backward; the optimiser's element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def part_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from adkd.models.zoo import build_model
    from adkd.pipelines.train.config import TrainConfig
    from adkd.pipelines.train.runtime import Runtime
    from adkd.pipelines.train.steps import build_optimizer, train_step

    backbone, size, batch, steps = args.backbone, args.size, args.batch, args.steps
    config = TrainConfig(category="x", data="x", model="rd", backbone=backbone, weights="none")
    rt = Runtime(device=device, amp=device.type == "cuda" or args.dry_run, channels_last=device.type == "cuda")
    model = rt.place(build_model("rd", backbone=backbone, weights="none"))
    optimizer = build_optimizer(model, config)
    x = rt.prepare(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device))
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=rt.amp):
        teacher = list(model.teacher(x))
    model.train()
    flops = step_flops(lambda: train_step(model, optimizer, x, rt, teacher=teacher))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_flops(name) if device.type == "cuda" else None
    rows: dict[str, Any] = {}
    variants: list[tuple[str, str | None]] = [("eager", None)]
    if not args.dry_run:
        variants += [("compiled", "default"), ("compiled_cudagraphs", "reduce-overhead")]
    for label, mode in variants:
        runner = model if mode is None else torch.compile(model, mode=mode)
        t0 = time.perf_counter()
        first = None
        if mode is not None:  # the first calls compile (and, with CUDA graphs, record) the step
            for _ in range(3):
                train_step(runner, optimizer, x, rt, teacher=teacher)
            _sync(device)
            first = time.perf_counter() - t0
        seconds = _median_step_s(lambda r=runner: train_step(r, optimizer, x, rt, teacher=teacher), steps, device)
        row = {"images_per_s": batch / seconds, "step_ms": 1000 * seconds, "compile_s": first}
        if peak:
            row["mfu"] = flops / seconds / peak
        rows[label] = row
        print(label, json.dumps(row), flush=True)
    eager_ms = rows["eager"]["step_ms"]
    for row in rows.values():  # steps of eager time the compile costs: the epochs it needs to pay for itself
        if row["compile_s"] and eager_ms > row["step_ms"]:
            row["steps_to_repay_compile"] = row["compile_s"] / ((eager_ms - row["step_ms"]) / 1000)
    return {"device": name, "peak_bf16_flops": peak, "step_gflop": flops / 1e9, "backbone": backbone, "size": size,
            "batch": batch, "variants": rows}  # fmt: skip


def _categories(root: Path, wanted: int, size: int, n_train: int = 200) -> list[str]:
    """``wanted`` category names under ``root``: the real ones there first, then synthetic ones made beside them."""
    from adkd.pipelines.data.synthetic_dataset import synthesize

    have = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
    synthetic = [name for name in ("weave", "grain", "dots", "disc", "screwhead", "lattice") if name not in have]
    missing = synthetic[: max(0, wanted - len(have))]
    if missing:
        synthesize(root, missing, size=size, n_train=n_train, n_test=max(8, n_train // 5), seed=0)
    return (have + missing)[:wanted]


def _train_overrides(args: argparse.Namespace, out: Path, bf16_on_cpu: bool = True) -> list[str]:
    """``bf16_on_cpu``: a dry run forces bf16 as the GPU run has it; False leaves it to the CPU (on where native)."""
    cpu = ["device=cpu", "amp=true"] if bf16_on_cpu else ["device=cpu"]
    return [
        f"backbone={args.backbone}", "weights=none", f"image_size={args.size}", f"batch_size={args.batch}",
        f"epochs={args.epochs}", f"out_dir={out}", "skip_validation=true", "export_onnx=false",
        "evaluate_test=false", "teacher_cache=true", "val_fraction=0.1",
        *(cpu if args.dry_run else ["device=cuda"]),
    ]  # fmt: skip


def part_cached_run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category
    from adkd.pipelines.train.presets import resolve_config

    category = _categories(args.data, 1, args.size, args.n_train)[0]
    out = args.out / "runs-cached"
    config = resolve_config("rd", "paper", category, str(args.data), _train_overrides(args, out))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train_category(config)
    wall = time.perf_counter() - t0
    if result.status != "FINISHED":
        return {"error": result.error}
    history = load_model_from_checkpoint(result.checkpoint_path)[2]["history"]
    rates = [h["train/images_per_s"] for h in history if "train/images_per_s" in h]
    epochs = [h["epoch_time_s"] for h in history if "epoch_time_s" in h]
    return {
        "category": category,
        "images_per_s_steps": statistics.median(rates[1:] or rates),
        "epoch_images_per_s": rates,
        "epoch_time_s": epochs,
        "wall_s": wall,
        "peak_gpu_mb": result.metrics.get("memory/peak_gpu_mb"),
        "peak_rss_mb": result.metrics.get("memory/peak_rss_mb"),
        "notes": result.notes,
    }


def _adkd(args: argparse.Namespace, *cli: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "ADKD_TRACKING": "off", "PYTHONPATH": path}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "adkd.cli.main", *cli], env=env, cwd=args.out, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return proc, time.perf_counter() - t0


def _check(proc: subprocess.CompletedProcess) -> None:
    """A failed `adkd train` fails its part (recorded under ``errors``, and the script exits non-zero)."""
    if proc.returncode:
        raise RuntimeError(f"adkd {' '.join(proc.args[3:])} exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-1500:]}")  # fmt: skip


def _run_rates(out: Path) -> dict[str, float]:
    """Each category's median steps-alone images/s from its run folder's history.json."""
    rates = {}
    for history in sorted(out.rglob("history.json"), key=lambda p: len(p.parts)):
        config = history.with_name("config.json")
        category = json.loads(config.read_text())["category"] if config.is_file() else history.parent.name
        rows = [h["train/images_per_s"] for h in json.loads(history.read_text()) if "train/images_per_s" in h]
        if rows and category not in rates:  # a run's folder may be copied (Ray's final checkpoint): the first
            rates[category] = statistics.median(rows[1:] or rows)
    return rates


def part_categories(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    names = _categories(args.data, args.categories, args.size, args.n_train)
    out = args.out / "runs-categories"
    share = "0" if args.dry_run else "0.25"
    cli = ["train", "--model", "rd", "--data", str(args.data), "--categories", ",".join(names), "--no-tracking",
           "--out", str(out), "--gpus-per-worker", share, "--cpus-per-worker", "1"]  # fmt: skip
    # The dry run checks this part's command and parsing; the bf16 path is the cached run's. Forced bf16 made it
    # ten times slower on a CPU without native bf16 (53 s of the dry run's 78, an AMD EPYC without avx512_bf16).
    for override in _train_overrides(args, out, bf16_on_cpu=False):
        cli += ["--set", override]
    proc, wall = _adkd(args, *cli, timeout=args.part_timeout)
    _check(proc)
    rates = _run_rates(out)
    return {"categories": names, "gpus_per_worker": float(share), "wall_s": wall, "rc": proc.returncode,
            "images_per_s": rates, "total_images_per_s": sum(rates.values()),
            "tail": (proc.stdout + proc.stderr)[-1500:]}  # fmt: skip


def part_ddp(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        return {"skipped": f"needs 2 GPUs, this machine has {gpus}"}
    name = _categories(args.data, 1, args.size, args.n_train)[0]
    out = args.out / "runs-ddp"
    cli = ["train", "--model", "rd", "--data", str(args.data), "--categories", name, "--no-tracking", "--out",
           str(out), "--workers-per-run", "2", "--gpus-per-worker", "1", "--cpus-per-worker", "2"]  # fmt: skip
    for override in _train_overrides(args, out):
        cli += ["--set", override]
    proc, wall = _adkd(args, *cli, timeout=args.part_timeout)
    _check(proc)
    return {"category": name, "workers": 2, "wall_s": wall, "rc": proc.returncode, "images_per_s": _run_rates(out),
            "tail": (proc.stdout + proc.stderr)[-1500:]}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    env = res["env"]
    lines = [f"GPU moonshot on {env['device']} (torch {env['torch']}, {env['mode']}; `benchmarks/gpu_moonshot.py`):"]
    lines.append("")
    steps = res.get("steps") or {}
    if "variants" in steps:
        lines += [
            f"Training step, rd {steps['backbone']} {steps['size']} px, batch {steps['batch']}, bf16, teacher features "
            f"passed in ({steps['step_gflop']:.0f} GFLOP per step):",
            "",
            "| variant | img/s | step ms | MFU | compile s | steps to repay it |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in steps["variants"].items():
            mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") else "-"
            comp = f"{r['compile_s']:.0f}" if r.get("compile_s") else "-"
            repay = f"{r['steps_to_repay_compile']:.0f}" if r.get("steps_to_repay_compile") else "-"
            lines.append(f"| {label} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | {mfu} | {comp} | {repay} |")
        lines.append("")
    run = res.get("cached_run") or {}
    if "images_per_s_steps" in run:
        epochs = ", ".join(f"{t:.1f}" for t in run["epoch_time_s"])
        lines.append(
            f"- End to end, `train_category` with the teacher cache on {run['category']}: "
            f"{run['images_per_s_steps']:.0f} img/s (steps, epochs 2+), epochs {epochs} s, "
            f"peak GPU {run['peak_gpu_mb'] or 0:.0f} MiB, peak RSS {run['peak_rss_mb'] or 0:.0f} MiB, "
            f"wall {run['wall_s']:.0f} s"
        )
    cats = res.get("categories") or {}
    if "wall_s" in cats:
        names = ",".join(cats["categories"])
        lines.append(
            f"- `adkd train --categories {names}` at {cats['gpus_per_worker']:g} GPU each: "
            f"wall {cats['wall_s']:.0f} s, rc {cats['rc']}, {cats['total_images_per_s']:.0f} img/s together "
            f"({', '.join(f'{k} {v:.0f}' for k, v in cats['images_per_s'].items())})"
        )
    ddp = res.get("ddp") or {}
    if ddp:
        lines.append(f"- 2-GPU DDP: {ddp.get('skipped') or ddp}")
    for part, err in (res.get("errors") or {}).items():
        lines.append(f"- {part}: failed, {err.splitlines()[-1] if err else ''}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: DIR/data, synthetic)")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--categories", type=int, default=4)
    p.add_argument("--part-timeout", type=float, default=240.0)
    args = p.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_moonshot: no CUDA GPU visible; use --dry-run on a CPU machine")
    device = torch.device("cpu" if args.dry_run else "cuda")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = (args.data or args.out / "data").resolve()
    args.data.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        args.backbone, args.size, args.batch, args.steps, args.epochs, args.categories = "resnet18", 32, 2, 1, 2, 2
        args.n_train = 16
    else:
        args.backbone, args.size, args.batch, args.steps, args.epochs = "wide_resnet50_2", 256, 64, 20, 10
        args.n_train = 200
        torch.backends.cudnn.benchmark = True
    res: dict[str, Any] = {
        "env": {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
            "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
            "torch": torch.__version__,
            "mode": "dry run on CPU" if args.dry_run else "CUDA",
        },
        "errors": {},
    }
    parts = {"steps": part_steps, "cached_run": part_cached_run, "categories": part_categories, "ddp": part_ddp}
    for name in args.parts.split(","):
        t0 = time.perf_counter()
        try:
            res[name] = parts[name](args, device)
        except Exception:  # one part's failure is a finding; the others still run
            res["errors"][name] = traceback.format_exc()[-3000:]
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        (args.out / "gpu_moonshot.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (args.out / "gpu_moonshot.md").write_text(markdown(res))
    print(markdown(res))
    if res["errors"]:
        sys.exit(f"gpu_moonshot: {len(res['errors'])} part(s) failed: {', '.join(res['errors'])}")


if __name__ == "__main__":
    main()
