"""What a finished run writes besides its checkpoint: the exported models, and their thresholds and metrics.

One evaluation path, the artifact's. The trained model is exported to ONNX (provisional constants: the
thresholds of the training-precision scores), the held-out normal images are scored through the exported
file with the predictor ``adkd predict``, ``adkd.load`` and the served pyfunc use, the thresholds are fitted
on those scores and written into the file, and the test split is scored through it: ``thresholds.json``,
``metrics.json``, the ONNX metadata, the MLflow metrics and the registry all carry the shipped model's
numbers (``test/...``). The PyTorch scores in the run's own precision (bf16 autocast where native) are
reported as ``test_torch/...``; a gated int8 model carries its own thresholds and ``test_int8/...``.

Without ``export_onnx`` the file is written to a temporary folder for the evaluation and removed; without
``export_onnx`` and ``evaluate_test`` (tuning trials) only the training-precision thresholds are fitted.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from adkd.pipelines.evaluate.report import test_metrics, write_json, write_report
from adkd.pipelines.evaluate.thresholds import Thresholds, fit_thresholds
from adkd.pipelines.inference.runtime import Runtime
from adkd.pipelines.inference.torch_scoring import predict
from adkd.pipelines.train.artifact_steps import (
    MODEL_FILE,
    artifact_view,
    export_model,
    fit_on_artifact,
    fit_split,
    int8_for_run,
    score_test,
    validity,
)
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult, emit
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.loop_state import LoopState
from adkd.pipelines.train.runtime_variants import (
    FLOAT_PREFIXES,
    choose_runtime_for_run,
    describe_choice,
    float_variants_for_run,
    openvino_int8_for_run,
)
from adkd.pipelines.train.runtime_variants import PREFIX as OV_INT8_PREFIX


@dataclass
class RunOutputs:
    """A finished run's thresholds, metrics and files (announced after ``model.pt`` is written)."""

    thresholds: Thresholds
    source: str  # the images the thresholds were fitted on: "validation" or "train"
    normal_scores: list[float]  # those images' scores, as the shipped model gives them
    metrics: dict[str, float]
    files: list[tuple[Path, str]] = field(default_factory=list)
    onnx_path: Path | None = None
    int8_path: Path | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _export_or_fail(
    scorer: nn.Module, config: TrainConfig, out: Path, thresholds: Thresholds, full: Any, checkpoint: Path
) -> Path:
    """``export_model``; any failure is one ExportError naming the checkpoint it was exported from."""
    from adkd.errors import AdkdError
    from adkd.pipelines.export.onnx_export import ExportError

    try:
        return export_model(scorer, config, out, thresholds, full)
    except AdkdError as exc:
        raise ExportError(f"ONNX export of {checkpoint} failed: {exc}") from None
    except Exception as exc:  # onnx/onnxruntime internals or the file system: still a failed export step
        raise ExportError(f"ONNX export of {checkpoint} failed: {type(exc).__name__}: {exc}") from exc


# The figures of the run's other deployment variants: each keeps its own (int8 files, variant_records).
_VARIANT_PREFIXES = tuple(
    f"{test}{prefix}/" for test in ("", "test_") for prefix in ("int8", OV_INT8_PREFIX, *FLOAT_PREFIXES.values())
)


# The timed steps after training, in order, as the run's note names them.
EXPORT_STEPS = {
    "time/export_s": "model.onnx",
    "time/int8_s": "int8",
    "time/int8_openvino_s": "OpenVINO int8",
    "time/float_variants_s": "OpenVINO f32/bf16",
    "time/runtime_choice_s": "runtime timing",
}


@contextlib.contextmanager
def timed(metrics: dict[str, float], key: str) -> Iterator[None]:
    """``metrics[key]``: the seconds the block took (a run's metrics say where its export time went)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics[key] = time.perf_counter() - start


def _shipped_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The fp32 file's own figures for its metadata (not the int8 models' or the other runtimes')."""
    return {k: v for k, v in metrics.items() if not k.startswith(_VARIANT_PREFIXES)}


def finish_run(
    scorer: nn.Module,
    data: Any,
    rt: Runtime,
    config: TrainConfig,
    run_dir: Path,
    notes: list[str],
    extra_metrics: dict[str, float] | None = None,
    save: Callable[[RunOutputs], Path] | None = None,
) -> RunOutputs:
    """Export, fit the thresholds on the export's scores, score the test split through it (module docstring).

    ``save`` writes ``model.pt`` for given outputs; it is called with the training-precision thresholds before
    the export, so a failed export (an ExportError naming it) leaves the trained model to export again. The
    caller saves the returned outputs over it.
    """
    from adkd.pipelines.export.onnx_export import set_metadata

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(extra_metrics or {})
    images, paths, source = fit_split(data, config, notes)
    fit_valid = validity(paths, config, config.eval_size)
    torch_maps, torch_scores = predict(scorer, images, rt, config.eval_batch_size, fit_valid)
    provisional = fit_thresholds(torch_scores, torch_maps, config.threshold_quantile, valid=fit_valid)
    info: dict[str, Any] = {"source": source, "images": len(images), "quantile": config.threshold_quantile}
    trained = RunOutputs(provisional, source, [float(s) for s in torch_scores.tolist()], dict(metrics))
    if not (config.export_onnx or config.evaluate_test):
        info["scored_by"] = f"PyTorch ({rt.describe().split(',')[0]})"
        write_json(run_dir / "thresholds.json", {**provisional.to_dict(), **info})
        return trained

    checkpoint = save(trained) if save is not None else run_dir / MODEL_FILE
    full = artifact_view(data, config)
    with contextlib.ExitStack() as stack:
        folder = run_dir
        if not config.export_onnx:  # evaluated through a file that is not kept
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=run_dir, prefix=".artifact-")))
        with timed(metrics, "time/export_s"):  # the graph, its parity check and its thresholds
            onnx_path = _export_or_fail(scorer, config, folder / "model.onnx", provisional, full, checkpoint)
            thresholds, normal_scores, info = fit_on_artifact(onnx_path, full, config)
        write_json(run_dir / "thresholds.json", {**thresholds.to_dict(), **info})
        out = RunOutputs(thresholds, source, normal_scores, metrics)
        if config.evaluate_test and len(full.test):
            maps, scores, valid, own, ms = score_test(onnx_path, full, config)
            t0 = time.perf_counter()
            metrics.update({f"test/{k}": v for k, v in own.items()})
            metrics["test/ms_per_image"] = ms
            out.files += write_report(run_dir, full, maps, scores, thresholds, valid)
            test_valid = validity(data.test_paths, config, config.eval_size)
            t_maps, t_scores = predict(scorer, data.test, rt, config.eval_batch_size, test_valid)
            metrics.update({f"test_torch/{k}": v for k, v in test_metrics(t_maps, t_scores, data, test_valid).items()})
            metrics["time/metrics_s"] = time.perf_counter() - t0
        reference = None  # the fp32 file's gate scores: OpenVINO's int8 is gated on them too
        if config.export_int8 and "onnxruntime" in config.int8_runtimes:
            with timed(metrics, "time/int8_s"):
                int8 = int8_for_run(onnx_path, full, config, test=config.evaluate_test)
            out.int8_path, out.tags, reference = int8.path, int8.tags, int8.reference
            metrics.update(int8.metrics)
            if "int8_refused" in int8.tags:  # said here too: without tracking, tags reach no one
                notes.append(int8.tags["int8_refused"])
            if int8.path is not None:
                out.files.append((int8.path, "onnx_int8"))
        if config.export_onnx:  # OpenVINO's int8 and the runtime auto runs (train.runtime_variants)
            metrics.update(deployment_variants(onnx_path, full, config, out, notes, reference))
        steps = [f"{label} {metrics[key]:.1f} s" for key, label in EXPORT_STEPS.items() if key in metrics]
        if len(steps) > 1:  # more than the export itself: say where the time after training went
            notes.append("export steps: " + ", ".join(steps))
        set_metadata(onnx_path, {"metrics": json.dumps(_shipped_metrics(metrics), sort_keys=True),
                                 "thresholds_fitted_on": json.dumps(info, sort_keys=True)})  # fmt: skip
        if config.export_onnx:
            out.onnx_path = onnx_path
            out.files.insert(0, (onnx_path, "onnx"))
    out.files.append((write_json(run_dir / "metrics.json", metrics), "metrics"))
    return out


def deployment_variants(
    onnx_path: Path, full: Any, config: TrainConfig, out: RunOutputs, notes: list[str], reference: Any = None
) -> dict[str, float]:
    """OpenVINO's gated int8 (``int8_runtimes``), the fp32 file measured in OpenVINO (``float_runtimes``) and the
    timed choice of ``runtime=auto`` (both with ``time_runtimes``).

    ``reference``: the fp32 file's gate scores when ONNX Runtime's int8 was gated on them already."""
    metrics: dict[str, float] = {}
    if config.export_int8 and "openvino" in config.int8_runtimes:
        with timed(metrics, "time/int8_openvino_s"):
            ov = openvino_int8_for_run(onnx_path, full, config, test=config.evaluate_test, reference=reference)
        out.tags.update(ov.tags)
        metrics.update(ov.metrics)
        if f"{OV_INT8_PREFIX}_refused" in ov.tags:
            notes.append(ov.tags[f"{OV_INT8_PREFIX}_refused"])
        reference = reference or ov.reference
        if ov.path is not None:
            out.files.append((ov.path, "onnx_int8_openvino"))
    if config.export_int8 if config.time_runtimes is None else config.time_runtimes:
        with timed(metrics, "time/float_variants_s"):
            floats = float_variants_for_run(onnx_path, full, config, test=config.evaluate_test, reference=reference)
        out.tags.update(floats.tags)
        metrics.update(floats.metrics)
        notes.extend(floats.notes)
        with timed(metrics, "time/runtime_choice_s"):
            record, timings = choose_runtime_for_run(onnx_path, full, config)
        metrics.update(timings)
        notes.append(describe_choice(record))
    return metrics


def publish(outputs: RunOutputs, result: TrainResult, callbacks: Sequence[TrainCallback]) -> None:
    """The run's exported files into ``result`` and announced to the callbacks (after ``model.pt``)."""
    result.onnx_path, result.int8_path = outputs.onnx_path, outputs.int8_path
    result.tags.update(outputs.tags)
    for path, kind in outputs.files:
        emit(callbacks, "on_artifact", path, kind)


def summary_metrics(state: LoopState, train_s: float, images_seen: int) -> dict[str, float]:
    """Training time, throughput, best validation loss and the last training loss."""
    extra = {"time/train_s": train_s}
    if train_s > 0 and images_seen:
        extra["train/images_per_s"] = images_seen / train_s
    if state.best_val_loss is not None:
        extra["val/best_loss"] = state.best_val_loss
    last_train = [h["train/loss"] for h in state.history if "train/loss" in h]
    if last_train:
        extra["train/final_loss"] = last_train[-1]
    return extra
