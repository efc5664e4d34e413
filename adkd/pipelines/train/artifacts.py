"""A saved checkpoint's exported artifacts: export it (fp32, gated int8) and evaluate it through them.

These read a checkpoint and the run's settings, so they live with training; ``adkd.pipelines.export`` and
``adkd.pipelines.evaluate`` work on models, files and images only. Thresholds of an export are fitted on
the exported file's own scores of the run's held-out normal images whenever the run's data is here (as
training does); without the data the checkpoint's stored thresholds are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.pipelines.train.artifact_steps import (
    FP32_RUNTIME,
    export_model,
    fit_on_artifact,
    int8_for_run,
    run_data,
    score_test,
)
from adkd.pipelines.train.checkpoint import load_model_from_checkpoint


def export_checkpoint(checkpoint: str | Path, out_path: str | Path | None = None) -> Path:
    """Export ``model.pt`` to ONNX (``model.onnx`` beside it by default), verified against PyTorch on real images
    of its data, thresholds fitted on the exported file's scores of the run's held-out normals."""
    from adkd.pipelines.export.onnx_export import set_metadata

    checkpoint = Path(checkpoint)
    model, config, meta = load_model_from_checkpoint(checkpoint)
    out = Path(out_path) if out_path else checkpoint.with_suffix(".onnx")
    data = run_data(config)
    if data is None and config.tiling.enabled:  # the checkpoint's tiling, checked on synthetic images
        from adkd.pipelines.tiling.spec import TilingSpec
        from adkd.pipelines.train.tiled import export_tiled_model

        spec = TilingSpec.from_meta(meta)
        return export_tiled_model(model, config, out, meta.get("thresholds"), None, spec)
    if data is None:
        from adkd.pipelines.export.onnx_export import export_onnx

        # No data here: the stored thresholds, checked on synthetic images.
        meta_out = {
            "model": config.model,
            "backbone": config.backbone,
            "category": config.category,
            "resize": config.resize,
            "checkpoint": checkpoint.name,
            "metrics": meta.get("metrics") or {},
        }
        return export_onnx(model, out, config.image_size, meta.get("thresholds"), meta_out, eval_size=config.eval_size)
    path = export_model(model, config, out, meta.get("thresholds") or _placeholder(), data)
    _, _, info = fit_on_artifact(path, data, config)
    props = {"metrics": meta.get("metrics") or {}, "thresholds_fitted_on": info}
    set_metadata(path, {key: json.dumps(value, sort_keys=True) for key, value in props.items()})
    return path


def _placeholder() -> dict[str, float]:
    """Constants for a checkpoint stored without thresholds: the export fits its own right after."""
    return {"image": 0.0, "pixel": 0.0, "score_min": 0.0, "score_max": 1.0}


@dataclass
class Int8Export:
    """An int8 export: the file, its gate and both files' test-split metrics (reported, never used to choose)."""

    path: Path
    gate: Any
    scheme: str
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"fp32": {...}, "int8": {...}}


def export_int8_checkpoint(
    checkpoint: str | Path,
    fp32_path: str | Path,
    out_path: str | Path | None = None,
    scheme: str | None = None,
    *,
    enforce_gate: bool = True,
) -> Int8Export:
    """Quantize ``fp32_path`` (the checkpoint's export), calibrated and gated on the run's validation images.

    ``scheme`` defaults to the run's ``int8_scheme``; a refusal raises QuantizationRefused (one line) unless
    ``enforce_gate`` is False (benchmarks timing every scheme).
    """
    from adkd.pipelines.export.quantize import QuantizationRefused, check_scheme

    _, config, _ = load_model_from_checkpoint(checkpoint)
    scheme = check_scheme(scheme or config.int8_scheme)
    data = run_data(config)
    if data is None:
        raise ConfigError(
            f"int8 export calibrates on the run's validation images, but {config.data}/{config.category} is not "
            "there; run it where the training data is"
        )
    options: dict[str, Any] = {"scheme": scheme, "enforce_gate": enforce_gate}
    if out_path is not None:
        options["out_path"] = out_path
    outcome = int8_for_run(Path(fp32_path), data, config, **options)
    if outcome.path is None:
        raise QuantizationRefused(outcome.tags.get("int8_refused", "int8 model refused"))
    test: dict[str, dict[str, float]] = {}
    if len(data.test) and outcome.test_metrics:
        test = {"fp32": score_test(Path(fp32_path), data, config, FP32_RUNTIME)[3], "int8": outcome.test_metrics}
    return Int8Export(path=outcome.path, gate=outcome.gate, scheme=scheme, test_metrics=test)


def evaluate_checkpoint(
    model: str | Path,
    data: str,
    category: str | None = None,
    out_dir: str | Path | None = None,
    runtime: str = FP32_RUNTIME,
) -> dict[str, float]:
    """``adkd evaluate``: score a data root's test split through a model's exported file.

    ``model``: an ``.onnx`` file, or a ``model.pt`` whose ``model.onnx`` beside it is used (exported there
    first, thresholds fitted on its scores, when the run did not keep one, e.g. a tuning trial).
    """
    from adkd.pipelines.evaluate.artifact_metrics import evaluate_artifact
    from adkd.pipelines.export.onnx_export import set_metadata

    model = Path(model)
    exported_here = False
    if model.suffix == ".onnx":
        onnx_path = model
    else:
        onnx_path = model.with_suffix(".onnx")
        if not onnx_path.is_file():
            export_checkpoint(model, onnx_path)
            exported_here = True
    metrics = evaluate_artifact(onnx_path, data, category, out_dir, runtime=runtime)
    if exported_here:  # the file made here carries the numbers it was just measured at
        set_metadata(onnx_path, {"metrics": json.dumps(metrics, sort_keys=True)})
    return metrics
