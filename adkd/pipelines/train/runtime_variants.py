"""A run's CPU deployment variants: OpenVINO's int8 beside ONNX Runtime's, and the runtime ``auto`` will pick.

``openvino_int8_for_run`` is ``artifact_steps.int8_for_run`` with NNCF (``adkd.pipelines.export.openvino_int8``):
the same validation split, the same gate, its own thresholds; metrics ``int8_openvino/...`` (the gate) and
``test_int8_openvino/...`` (its own test metrics). ``choose_runtime_for_run`` times, on this machine and the
run's images, every variant whose thresholds and test metrics were measured on its own file (ONNX Runtime fp32,
int8 files that passed their gate) and records the fastest in ``model.onnx``
(``adkd.pipelines.export.runtime_choice``); OpenVINO f32 and bf16 run only when asked for by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.pipelines.inference.artifact import nhwc
from adkd.pipelines.train.artifact_steps import Int8Outcome, fit_split, gated_variant
from adkd.pipelines.train.config import TrainConfig

PREFIX = "int8_openvino"


def openvino_int8_for_run(
    onnx_path: Path, full: Any, config: TrainConfig, *, test: bool = True, reference: Any = None
) -> Int8Outcome:
    """NNCF int8 of the run's fp32 file for OpenVINO, calibrated and gated on its validation images
    (``artifact_steps.gated_variant``; ``reference``: the fp32 gate scores of ONNX Runtime's int8 outcome)."""
    from adkd.pipelines.export.openvino_int8 import OpenVinoQuantizationRefused, quantize_openvino

    return gated_variant(
        quantize_openvino, OpenVinoQuantizationRefused, PREFIX, onnx_path, full, config, test=test, reference=reference
    )


def choose_runtime_for_run(onnx_path: Path, full: Any, config: TrainConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """Time the variants ``auto`` may run here, on the run's held-out normals (whole images at the run's size),
    and record the fastest in ``onnx_path``; (record, metrics)."""
    from adkd.pipelines.export.runtime_choice import BATCHES, choose_runtime

    sample = fit_split(full, config)[0][: max(BATCHES)]
    record = choose_runtime(onnx_path, threads=config.num_threads, images=nhwc(sample) if len(sample) else None)
    metrics = {
        f"runtime/{variant}_{key}": value
        for variant, timings in record["timings_ms_per_image"].items()
        for key, value in timings.items()
    }
    return record, metrics


def describe_choice(record: dict[str, Any]) -> str:
    """One line for the run's notes: what ``auto`` will run and how fast each candidate was."""
    timings = record["timings_ms_per_image"]
    shown = ", ".join(f"{v} {t['b1_ms']:.1f}" for v, t in sorted(timings.items(), key=lambda kv: kv[1]["b1_ms"]))
    return f"runtime=auto runs {record['variant']} (ms/image at batch 1 on {record['threads']} threads: {shown})"


def _checkpoint_data(checkpoint: Path, what: str) -> tuple[TrainConfig, Any]:
    from adkd.errors import ConfigError
    from adkd.pipelines.train.artifact_steps import run_data
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint

    _, config, _ = load_model_from_checkpoint(checkpoint)
    data = run_data(config)
    if data is None:
        raise ConfigError(
            f"{what} uses the run's validation images, but {config.data}/{config.category} is not there; "
            "run it where the training data is"
        )
    return config, data


def export_openvino_int8_checkpoint(checkpoint: str | Path, fp32_path: str | Path) -> Int8Outcome:
    """``adkd export --int8`` for OpenVINO: NNCF int8 of ``fp32_path`` beside it, gated on the run's images.

    A refusal comes back as the outcome's ``int8_openvino_refused`` tag (no file).
    """
    config, data = _checkpoint_data(Path(checkpoint), "OpenVINO int8 export")
    return openvino_int8_for_run(Path(fp32_path), data, config)


def choose_runtime_checkpoint(checkpoint: str | Path, fp32_path: str | Path) -> dict[str, Any]:
    """``adkd export``: time the gated variants of ``fp32_path`` here and record the fastest in it."""
    config, data = _checkpoint_data(Path(checkpoint), "timing the runtimes")
    record, _ = choose_runtime_for_run(Path(fp32_path), data, config)
    return record
