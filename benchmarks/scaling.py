"""Wall time of N categories trained one after another against all at once on Ray.

    .venv/bin/python benchmarks/scaling.py [--categories 3] [--epochs 4] [--model rd]
        [--gpus-per-worker 0.25] [--skip-serial] [--tag NAME]

Synthesises N categories (64 px, the `cpu-smoke` preset), then
- serial: the single-category engine in this process, one category after another (all cores);
- parallel: `run_all_categories` on an embedded local Ray, every category at once, the machine's
  CPUs split between them (or `--gpus-per-worker` of one GPU each: one worker per category).
No MLflow in either, so the figures compare training only. Writes
benchmarks/results/scaling-<tag>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from adkd.pipelines.data.synthetic_dataset import CATEGORIES, synthesize
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config


def _names(n: int) -> list[str]:
    """n category names: the synthetic ones, then copies of them (weave1, grain1, ...) when n is larger."""
    return [
        CATEGORIES[i % len(CATEGORIES)] + (str(i // len(CATEGORIES)) if i >= len(CATEGORIES) else "") for i in range(n)
    ]


def _make_data(root: Path, names: list[str], size: int) -> None:
    bases = [c for c in CATEGORIES if any(name.rstrip("0123456789") == c for name in names)]
    synthesize(root, categories=bases, size=size)
    for name in names:
        if not (root / name).exists():
            shutil.copytree(root / name.rstrip("0123456789"), root / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model", default="rd")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--gpus-per-worker", "--gpus-per-category", dest="gpus_per_category", type=float, default=0.0)
    parser.add_argument("--skip-serial", action="store_true")
    parser.add_argument("--tag", default=platform.node() or "local")
    args = parser.parse_args()

    from adkd.platform.cluster.connection import shutdown
    from adkd.platform.cluster.driver import RayRunOptions, run_all_categories
    from adkd.platform.cluster.resources import CategoryResources

    names = _names(args.categories)
    work = Path(tempfile.mkdtemp(prefix="adkd-scaling-"))
    data = work / "data"
    _make_data(data, names, args.size)
    overrides = [f"epochs={args.epochs}", f"image_size={args.size}", "skip_validation=true"]
    if args.gpus_per_category:
        overrides.append("device=cuda")
    configs = [
        resolve_config(args.model, "cpu-smoke", category=n, data=str(data), overrides=[*overrides, f"out_dir={work}/s"])
        for n in names
    ]
    cpus = os.cpu_count() or 1
    record: dict = {
        "categories": len(names),
        "epochs": args.epochs,
        "model": args.model,
        "image_size": args.size,
        "cpus": cpus,
        "gpus_per_category": args.gpus_per_category,
    }

    if not args.skip_serial:
        t0 = time.perf_counter()
        for config in configs:
            result = train_category(config)
            assert result.status == "FINISHED", result.error
        record["serial_s"] = time.perf_counter() - t0

    per_category = max(round(cpus / len(names), 2), 0.1)
    t0 = time.perf_counter()
    outcome = run_all_categories(
        configs,
        RayRunOptions(
            resources=CategoryResources(cpus=per_category, gpus=args.gpus_per_category),
            num_cpus=cpus,
            runs_dir=work / "runs",
        ),
    )
    record["parallel_s"] = time.perf_counter() - t0
    shutdown()
    record["parallel_failed"] = outcome.failed
    record["cpus_per_category"] = per_category
    record["parallel_train_s_mean"] = sum(r.duration_s for r in outcome.results) / len(outcome.results)
    if "serial_s" in record:
        record["speedup"] = record["serial_s"] / record["parallel_s"]

    from results_md import write_results  # benchmarks/ is on sys.path when run

    out = write_results(f"scaling-{args.tag}", record)
    serial = f"{record['serial_s']:.1f}" if "serial_s" in record else "-"
    speedup = f"{record['speedup']:.2f}x" if "speedup" in record else "-"
    print("| categories | epochs | model | size | CPUs | serial s | parallel (Ray) s | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(names)} | {args.epochs} | {args.model} | {args.size} | {cpus} | {serial} | "
        f"{record['parallel_s']:.1f} | {speedup} |"
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
