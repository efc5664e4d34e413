"""A run's CPU deployment variants: OpenVINO's int8 beside ONNX Runtime's, the fp32 file measured in OpenVINO, and
the runtime ``auto`` will pick.

``openvino_int8_for_run`` is ``artifact_steps.int8_for_run`` with NNCF (``adkd.pipelines.export.openvino_int8``):
the same validation split, the same gate, its own thresholds; metrics ``int8_openvino/...`` (the gate) and
``test_int8_openvino/...`` (its own test metrics). ``float_variants_for_run`` measures the fp32 file in OpenVINO
f32 and bf16 (``float_runtimes``) the same way, without a file of their own (``adkd.pipelines.export.
float_variants``): metrics ``openvino_f32/...``, ``openvino_bf16/...`` and ``test_openvino_f32/...``, ....
``choose_runtime_for_run`` times, on this machine and the run's images, every variant whose thresholds and test
metrics were measured on what runs and that passed its gate, and records the fastest in ``model.onnx``
(``adkd.pipelines.export.runtime_choice``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.pipelines.inference.artifact import nhwc
from adkd.pipelines.train.artifact_steps import (
    Int8Outcome,
    fit_split,
    gate_options,
    gated_variant,
    score_test,
    validity,
)
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


FLOAT_PREFIXES = {"openvino": "openvino_f32", "openvino-bf16": "openvino_bf16"}  # metric prefix of each variant


@dataclass
class FloatOutcome:
    """What a run keeps about the fp32 file's other runtimes: metrics, tags, notes and each variant's gate."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # variant → its own, without prefix


def float_variants_for_run(
    onnx_path: Path, full: Any, config: TrainConfig, *, test: bool = True, reference: Any = None
) -> FloatOutcome:
    """The fp32 file in each of ``config.float_runtimes``, measured on its own and recorded in it
    (``adkd.pipelines.export.float_variants``); ``reference``: the fp32 gate scores of an int8 outcome.

    A variant this CPU cannot run (bf16 without AVX512-BF16/AMX), or a run with too few validation images to gate,
    is left out with a note; one that fails its gate keeps its record (asked for by name, it is judged by its own
    thresholds) and a ``<prefix>_refused`` tag, and ``auto`` never runs it; one OpenVINO cannot compile or run is
    a note and a tag, never a failed run (the fp32 model stands).
    """
    from adkd.errors import AdkdError, first_line
    from adkd.pipelines.export.float_variants import add_test_metrics, measure_variant, write_records
    from adkd.pipelines.export.int8_gate import MIN_VALIDATION_IMAGES
    from adkd.pipelines.export.quantize import gate_reference
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16

    out = FloatOutcome()
    variants = list(dict.fromkeys(config.float_runtimes))
    if "openvino-bf16" in variants and not cpu_has_bf16():
        variants.remove("openvino-bf16")
        out.notes.append("openvino-bf16 not measured: this CPU has no bf16 (AVX512-BF16/AMX)")
    if not variants:
        return out
    if len(full.val) < MIN_VALIDATION_IMAGES:
        out.notes.append(
            f"{', '.join(variants)} not measured: the gate needs {MIN_VALIDATION_IMAGES} validation images, "
            f"the run holds {len(full.val)} out; runtime=auto keeps to ONNX Runtime and the int8 files"
        )
        return out
    reference = reference or gate_reference(onnx_path, nhwc(full.val), **gate_options(full, config))
    images, paths, source = fit_split(full, config)
    fitted_on = {"source": source, "images": len(images)}
    records = {}
    for variant in variants:
        prefix = FLOAT_PREFIXES[variant]
        try:
            record, gate = measure_variant(
                onnx_path, variant, images, validity(paths, config, config.eval_size), config.threshold_quantile,
                reference, fitted_on=fitted_on, threads=config.num_threads,
            )  # fmt: skip
            scored = score_test(onnx_path, full, config, runtime=variant) if test and len(full.test) else None
        except (AdkdError, RuntimeError) as exc:  # OpenVINO could not compile or run it: the fp32 model stands
            reason = (
                f"{variant} of {onnx_path.name} could not be measured ({first_line(exc)}); runtime=auto will not run it"
            )
            out.tags.update({prefix: "failed", f"{prefix}_refused": reason})
            out.notes.append(reason)
            continue
        out.gates[variant] = gate
        out.metrics.update(gate.metrics(prefix))
        problems = gate.problems()
        out.tags[prefix] = "refused" if problems else "measured"
        if problems:
            out.tags[f"{prefix}_refused"] = f"{variant} of {onnx_path.name}: {'; '.join(problems)}"
            out.notes.append(f"runtime=auto will not run {variant}: {'; '.join(problems)}")
        if scored is not None:
            *_, own, ms = scored
            record = add_test_metrics(record, own)
            out.test_metrics[variant] = own
            out.metrics.update({f"test_{prefix}/{k}": v for k, v in own.items()})
            out.metrics[f"test_{prefix}/ms_per_image"] = ms
        records[variant] = record
    if records:
        write_records(onnx_path, records)
    return out


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


def choose_runtime_checkpoint(checkpoint: str | Path, fp32_path: str | Path) -> tuple[dict[str, Any], FloatOutcome]:
    """``adkd export``: measure the fp32 file's other runtimes (``float_variants_for_run``), time the gated variants
    of ``fp32_path`` here and record the fastest in it; (the record, the measurement)."""
    config, data = _checkpoint_data(Path(checkpoint), "timing the runtimes")
    floats = float_variants_for_run(Path(fp32_path), data, config)
    record, _ = choose_runtime_for_run(Path(fp32_path), data, config)
    return record, floats
