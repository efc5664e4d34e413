"""``runtime=auto``: time each variant of an exported model on this machine and record the fastest.

The variants are the model's files run by each CPU runtime (``adkd.pipelines.predict.runtimes.VARIANTS``).
``auto`` may run only a variant whose thresholds and test metrics were measured on that very file, run by that
very runtime, so that the numbers a version is judged by are those of what runs: ONNX Runtime fp32 (the
reference every number of the run comes from), an int8 file that passed its gate (its ``int8_gate`` metadata
says so) and carries its own test metrics (its ``metrics`` metadata), and OpenVINO f32 or bf16 running the fp32
file when the export measured that variant on its own and it passed the same gate
(``adkd.pipelines.predict.variant_records``). A variant never measured so, or bf16 on a CPU without it, takes
no part (the record says why) and runs only when asked for by name.

Each candidate is timed at batch 1 (the station's case) and batch 8 on the run's own images (noise at the
model's input size without them), median of ``repeats`` calls after warm-up, the candidates alternating over
``rounds`` rounds so a burst of load on a shared machine does not favour one; the fastest at batch 1 is
recorded in the fp32 file's metadata as ``runtime_choice`` with every timing, the CPU, the thread count and
why each other variant took no part, and ``open_predictor(..., "auto")`` runs it.
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

from adkd.pipelines.export.graph_metadata import read_metadata, set_metadata
from adkd.pipelines.predict.predictor import thread_budget

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


def candidates(fp32_path: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """(variant → file of the variants ``auto`` may run, variant → why each other one may not / its gate)."""
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16
    from adkd.pipelines.predict.runtimes import VARIANTS, variant_path
    from adkd.pipelines.predict.variant_records import FLOAT_VARIANTS, eligibility

    files: dict[str, Path] = {}
    notes: dict[str, dict[str, Any]] = {}
    fp32_meta = read_metadata(fp32_path)
    for variant in VARIANTS:
        path = variant_path(fp32_path, variant)
        if not path.is_file():
            notes[variant] = {"skipped": f"no {path.name}"}
            continue
        if variant in FLOAT_VARIANTS:
            # The fp32 file on another runtime: only with thresholds, a gate and test metrics of its own.
            notes[variant] = eligibility(fp32_meta, variant)
            if variant == "openvino-bf16" and not cpu_has_bf16():
                notes[variant] = {"skipped": "this CPU has no bf16 (AVX512-BF16/AMX)"}
            if not (notes[variant].get("gate_ok") and notes[variant].get("own_metrics")):
                continue
        if variant.endswith("-int8"):
            meta = read_metadata(path)
            gate_ok, own_metrics = bool((meta.get("int8_gate") or {}).get("ok")), bool(meta.get("metrics"))
            notes[variant] = {"gate_ok": gate_ok, "own_metrics": own_metrics}
            if not (gate_ok and own_metrics):
                continue
        files[variant] = path
    return files, notes


def timing_images(predictor: Any) -> np.ndarray:
    """Noise images at the size the model takes whole images (a tiled model at its own resolution: one tile)."""
    from adkd.pipelines.tiling.spec import TilingSpec

    spec = TilingSpec.from_meta(predictor.meta)
    side = predictor.image_size or predictor.tile_size
    height, width = (spec.fixed_size if spec is not None else None) or (side, side)
    return np.random.default_rng(0).integers(0, 256, (max(BATCHES), height, width, 3), dtype=np.uint8)


def time_variants(
    files: dict[str, Path], threads: int | None, repeats: int = 10, rounds: int = 3, images: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """variant → {"b1_ms": ..., "b8_ms": ...}: ms per image, median over rounds that alternate the variants.

    ``images``: uint8 NHWC whole images as the model takes them (the run's own, at its input size; repeated to
    fill a batch); ``timing_images`` without them.
    """
    from adkd.pipelines.predict.runtimes import open_predictor

    predictors = {v: open_predictor(p, v, threads=threads) for v, p in files.items()}
    pool = timing_images(next(iter(predictors.values()))) if images is None else np.asarray(images)
    batches = {b: np.ascontiguousarray(pool[np.arange(b) % len(pool)]) for b in BATCHES}
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
    threads: int | None = None,
    repeats: int = 10,
    rounds: int = 3,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Time the variants ``auto`` may run here (on ``images``, see ``time_variants``), record the fastest at batch 1
    in ``fp32_path``; the record."""
    fp32_path = Path(fp32_path)
    files, notes = candidates(fp32_path)
    timings = time_variants(files, threads, repeats, rounds, images)
    fastest = min(timings, key=lambda v: timings[v]["b1_ms"])
    record = {
        "variant": fastest,
        "timings_ms_per_image": timings,
        "candidates": notes,
        "cpu": cpu_name(),
        "threads": thread_budget(threads) or os.cpu_count(),  # what the predictors above ran on
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "timed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "openvino_precision_hint": {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "f32"},
    }
    set_metadata(fp32_path, {"runtime_choice": json.dumps(record, sort_keys=True)})
    return record
