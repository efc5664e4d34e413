"""Measure a runtime variant of the fp32 file on its own, so that ``runtime=auto`` may run it.

``openvino`` and ``openvino-bf16`` run the exported fp32 file itself in OpenVINO (f32 or bf16 precision hint).
Their scores are not ONNX Runtime's (bf16 moved a trained stfpm's bottle test scores by 1.9 % on average and its
image threshold by 7 %), so each gets what an int8 file gets, written into the fp32 file as a record
(``adkd.pipelines.predict.variant_records``):

- thresholds fitted on its own scores of the same held-out normals, at the same quantile, as the fp32 file's;
- the gate of every int8 artifact (``int8_gate``) against ONNX Runtime fp32 on the gate images: score and map
  correlation, synthetic-defect image AUROC and false positives on held-out normals. As for an int8 file, the
  image threshold judged there is fitted on the calibration part of the validation images, which the held-out
  normals are not part of (the shipped one is fitted on all of them, as the fp32 file's is);
- its own test metrics, added by the caller that has the test split (``add_test_metrics``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adkd.pipelines.export.int8_gate import DEFAULT_BOUNDS, GateBounds, GateScores, Int8Gate, int8_gate
from adkd.pipelines.export.onnx_export import read_metadata, set_metadata
from adkd.pipelines.predict.variant_records import FLOAT_VARIANTS, RECORDS_KEY


def measure_variant(
    fp32_path: str | Path,
    variant: str,
    fit_images: np.ndarray | torch.Tensor,
    fit_valid: torch.Tensor | None,
    quantile: float,
    reference: GateScores,
    *,
    fitted_on: dict[str, Any] | None = None,
    threads: int | None = None,
    bounds: GateBounds = DEFAULT_BOUNDS,
) -> tuple[dict[str, Any], Int8Gate]:
    """(record, gate) of ``variant`` of ``fp32_path``: thresholds fitted on its scores of ``fit_images`` (the images
    the fp32 file's thresholds came from, ``fit_valid`` their valid pixels) and its gate on ``reference``'s images
    (the fp32 file's ``gate_reference``). Nothing is written (``write_records``)."""
    from adkd.pipelines.evaluate.thresholds import fit_thresholds
    from adkd.pipelines.inference.artifact import score_artifact
    from adkd.pipelines.predict import open_predictor

    if variant not in FLOAT_VARIANTS:
        raise ValueError(f"{variant!r} is not a variant of the fp32 file ({', '.join(FLOAT_VARIANTS)})")
    predictor = open_predictor(fp32_path, runtime=variant, threads=threads)
    maps, scores = score_artifact(predictor, fit_images, fit_valid)
    thresholds = fit_thresholds(scores, maps, quantile, valid=fit_valid).to_dict()

    images = reference.images
    calibration = score_artifact(predictor, images.calibration, images.valid_calibration)[1]
    predictor.image_threshold = float(np.quantile(calibration.numpy().astype(np.float64), images.quantile))
    gate = int8_gate(reference, predictor, images, bounds)
    scored_by = f"{Path(fp32_path).name} ({variant})"
    record = {
        "thresholds": thresholds,
        "normal_scores": {"quantile": quantile, "scores": [float(s) for s in scores.reshape(-1).tolist()]},
        "thresholds_fitted_on": {**(fitted_on or {}), "quantile": quantile, "scored_by": scored_by},
        "gate": gate.to_dict(),
        "precision_hint": "bf16" if variant.endswith("bf16") else "f32",
    }
    return record, gate


def add_test_metrics(record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """``record`` with the variant's own test-split metrics (without prefix, as ``test_metrics`` gives them)."""
    return {**record, "metrics": {f"test/{k}": float(v) for k, v in metrics.items()}}


def write_records(fp32_path: str | Path, records: dict[str, dict[str, Any]]) -> None:
    """Put ``records`` (variant → record) into the fp32 file's metadata, replacing those variants' old records."""
    kept = read_metadata(fp32_path).get(RECORDS_KEY)
    merged = {**(kept if isinstance(kept, dict) else {}), **records}
    set_metadata(Path(fp32_path), {RECORDS_KEY: json.dumps(merged, sort_keys=True, default=float)})
