"""A run's CPU deployment variants: OpenVINO's int8 beside ONNX Runtime's, and the runtime ``auto`` will pick.

``openvino_int8_for_run`` mirrors ``outputs.int8_for_run`` with NNCF (``adkd.pipelines.export.openvino_int8``):
the same validation split, the same gate, its own thresholds; metrics ``int8_openvino/...`` (the gate) and
``test_int8_openvino/...`` (its own test metrics). ``choose_runtime_for_run`` times every variant that passed
its gate on this machine and records the fastest in ``model.onnx`` (``adkd.pipelines.export.runtime_choice``);
bf16 is gated on the same held-out images as the int8 models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adkd.pipelines.inference.artifact import nhwc
from adkd.pipelines.train.artifact_steps import Int8Outcome, score_test, validity
from adkd.pipelines.train.config import TrainConfig

PREFIX = "int8_openvino"


def openvino_int8_for_run(onnx_path: Path, full: Any, config: TrainConfig, *, test: bool = True) -> Int8Outcome:
    """NNCF int8 of the run's fp32 file for OpenVINO, calibrated and gated on its validation images."""
    from adkd.pipelines.export.onnx_export import set_metadata
    from adkd.pipelines.export.openvino_int8 import OpenVinoQuantizationRefused, quantize_openvino

    try:
        path, gate = quantize_openvino(
            onnx_path,
            nhwc(full.val),
            valid=validity(full.val_paths, config, None),
            seed=config.seed,
            threshold_quantile=config.threshold_quantile,
            source=f"validation images of {config.data}/{config.category}",
            threads=config.num_threads,
        )
    except OpenVinoQuantizationRefused as exc:
        return Int8Outcome(tags={PREFIX: "refused", f"{PREFIX}_refused": str(exc)})
    metrics = {k.replace("int8/", f"{PREFIX}/", 1): v for k, v in gate.metrics().items()}
    outcome = Int8Outcome(path=path, metrics=metrics, tags={PREFIX: "logged"}, gate=gate)
    if test and len(full.test):
        *_, own, ms = score_test(path, full, config, runtime="auto")  # runs on OpenVINO, as it was made for
        outcome.test_metrics = own
        outcome.metrics.update({f"test_{PREFIX}/{k}": v for k, v in own.items()})
        outcome.metrics[f"test_{PREFIX}/ms_per_image"] = ms
        set_metadata(path, {"metrics": json.dumps({f"test/{k}": v for k, v in own.items()}, sort_keys=True)})
    return outcome


def choose_runtime_for_run(onnx_path: Path, full: Any, config: TrainConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """Time the run's gated variants here and record the fastest in ``onnx_path``; (record, metrics)."""
    from adkd.pipelines.export.int8_gate import MIN_VALIDATION_IMAGES, gate_images
    from adkd.pipelines.export.runtime_choice import choose_runtime

    gate = None
    if len(full.val) >= MIN_VALIDATION_IMAGES:  # bf16 is a candidate only when it can be gated
        gate = gate_images(
            full.val,
            config.seed,
            config.threshold_quantile,
            valid=validity(full.val_paths, config, None),
            map_size=None if config.tiling.enabled else config.eval_size,  # tiled: stitched whole-image maps
            source=f"validation images of {config.data}/{config.category}",
        )
    record = choose_runtime(onnx_path, gate, threads=config.num_threads)
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
