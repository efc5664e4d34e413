"""``runtime=auto``: time each variant of an exported model on this machine and record the fastest.

The variants are the model's files run by each CPU runtime (``adkd.pipelines.predict.runtimes.VARIANTS``):
ONNX Runtime fp32 and int8, OpenVINO f32, bf16 (where the CPU has it) and int8. A variant takes part only
when it passed its gate: an int8 file exists only when its gate passed (its ``int8_gate`` metadata says so),
and OpenVINO bf16 is never chosen by auto: it runs the fp32 file with the fp32 thresholds and has no metrics of
its own, so it is used only when asked for by name.

Each candidate is timed at batch 1 (the station's case) and batch 8, median of ``repeats`` calls after
warm-up, the candidates alternating over ``rounds`` rounds so a burst of load on a shared machine does not
favour one; the fastest at batch 1 is recorded in the fp32 file's metadata as ``runtime_choice`` with every
timing, the CPU, the thread count and each candidate's gate, and ``open_predictor(..., "auto")`` runs it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from adkd.pipelines.export.int8_gate import GateImages
from adkd.pipelines.export.onnx_export import read_metadata, set_metadata

BATCHES = (1, 8)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what Python's platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms_per_image(fn: Callable[[], Any], batch: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch


def candidates(
    fp32_path: Path, gate: GateImages | None, threads: int | None
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """(variant → file of the variants that may run, variant → why each other one may not / its gate)."""
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16
    from adkd.pipelines.predict.runtimes import VARIANTS, variant_path

    files: dict[str, Path] = {}
    notes: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        path = variant_path(fp32_path, variant)
        if not path.is_file():
            notes[variant] = {"skipped": f"no {path.name}"}
            continue
        if variant.endswith("-int8"):
            verdict = read_metadata(path).get("int8_gate") or {}
            notes[variant] = {"gate_ok": bool(verdict.get("ok"))}
            if not verdict.get("ok"):
                continue
        if variant == "openvino-bf16":
            if not cpu_has_bf16():
                notes[variant] = {"skipped": "this CPU has no bf16"}
                continue
            # bf16 runs the fp32 file with thresholds fitted on fp32 scores and has no metrics of its own, so the
            # registered numbers would not be those of what runs (13 % score differences seen): ask for it by name.
            notes[variant] = {"skipped": "bf16 reuses the fp32 thresholds and has no metrics of its own"}
            continue
        files[variant] = path
    return files, notes


def time_variants(
    files: dict[str, Path], threads: int | None, repeats: int = 10, rounds: int = 3
) -> dict[str, dict[str, float]]:
    """variant → {"b1_ms": ..., "b8_ms": ...}: ms per image, median over rounds that alternate the variants."""
    from adkd.pipelines.predict.runtimes import open_predictor

    predictors = {v: open_predictor(p, v, threads=threads) for v, p in files.items()}
    first = next(iter(predictors.values()))
    size = first.image_size or first.tile_size  # a tiled model at its own resolution: timed on one-tile images
    rng = np.random.default_rng(0)
    batches = {b: rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8) for b in BATCHES}
    for predictor in predictors.values():  # warm-up: compilation, first-shape allocation
        for images in batches.values():
            predictor.run(images)
            predictor.run(images)
    samples: dict[str, dict[int, list[float]]] = {v: {b: [] for b in BATCHES} for v in predictors}
    for _ in range(rounds):
        for variant, predictor in predictors.items():
            for b, images in batches.items():
                reps = repeats if b == 1 else max(2, repeats // 4)
                samples[variant][b].append(_ms_per_image(lambda p=predictor, x=images: p.run(x), b, reps))
    return {v: {f"b{b}_ms": statistics.median(s[b]) for b in BATCHES} for v, s in samples.items()}


def choose_runtime(
    fp32_path: str | Path,
    gate: GateImages | None = None,
    threads: int | None = None,
    repeats: int = 10,
    rounds: int = 3,
) -> dict[str, Any]:
    """Time the model's gated variants here, record the fastest at batch 1 in ``fp32_path``; the record."""
    fp32_path = Path(fp32_path)
    files, notes = candidates(fp32_path, gate, threads)
    timings = time_variants(files, threads, repeats, rounds)
    fastest = min(timings, key=lambda v: timings[v]["b1_ms"])
    record = {
        "variant": fastest,
        "timings_ms_per_image": timings,
        "candidates": notes,
        "cpu": cpu_name(),
        "threads": threads or os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "timed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "openvino_precision_hint": {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "f32"},
    }
    set_metadata(fp32_path, {"runtime_choice": json.dumps(record, sort_keys=True)})
    return record
