"""The int8 ONNX model of a tracked run (``export_int8=true``): written, gated, and summarised for MLflow.

A refused int8 model (the accuracy gate in ``adkd.pipelines.export.quantize``) does not fail the run: the
fp32 model is logged and registered as always, and the refusal is kept as a tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INT8_ARTIFACT = "onnx_model_int8"  # the pyfunc artifact that carries the int8 file beside ONNX_ARTIFACT


@dataclass
class Int8Outcome:
    """What the run logs about its int8 model."""

    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def int8_for_run(checkpoint: Path, onnx_path: Path) -> Int8Outcome:
    """Quantize the run's fp32 export; metrics ``int8/...`` (gate) and ``test_int8/...`` (test split)."""
    from adkd.pipelines.export.quantize import QuantizationRefused, export_int8

    try:
        result = export_int8(checkpoint, onnx_path)
    except QuantizationRefused as exc:
        return Int8Outcome(tags={"int8": "refused", "int8_refused": str(exc)})
    g = result.gate
    metrics = {"int8/score_correlation": g.score_correlation, "int8/verdicts_moved": float(g.verdicts_moved)}
    if g.int8_image_auroc is not None and g.fp32_image_auroc is not None:
        metrics["int8/gate_image_auroc"] = g.int8_image_auroc
        metrics["int8/gate_image_auroc_fp32"] = g.fp32_image_auroc
    for key, value in result.test_metrics.get("int8", {}).items():
        metrics[f"test_int8/{key}"] = value
    return Int8Outcome(path=result.path, metrics=metrics, tags={"int8": "logged"})
