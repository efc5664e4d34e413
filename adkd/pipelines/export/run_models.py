"""The exported models of a finished run: ``model.onnx`` and, with ``export_int8=true``, the gated int8 model.

A refused int8 model (the accuracy gate in ``adkd.pipelines.export.quantize``) does not fail the run: the
fp32 model is kept as always, and the refusal is kept as a tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adkd.errors import AdkdError


@dataclass
class Int8Outcome:
    """What a run keeps about its int8 model."""

    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def onnx_for_run(checkpoint: Path) -> Path:
    """``model.onnx`` beside ``checkpoint``, verified against PyTorch; any failure is an ExportError naming it."""
    from adkd.pipelines.export.onnx_export import ExportError, export_checkpoint

    try:
        return export_checkpoint(checkpoint, checkpoint.with_suffix(".onnx"))
    except AdkdError as exc:
        raise ExportError(f"ONNX export of {checkpoint} failed: {exc}") from None
    except Exception as exc:  # onnx/onnxruntime internals: still a failed export step, not a crash of training
        raise ExportError(f"ONNX export of {checkpoint} failed: {type(exc).__name__}: {exc}") from exc


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
