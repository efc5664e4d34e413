"""int8 for OpenVINO: NNCF post-training quantization of the exported graph, gated like every int8 artifact.

NNCF quantizes the fp32 ONNX file itself (its ONNX backend) and writes an ONNX graph with QuantizeLinear /
DequantizeLinear pairs placed for OpenVINO's CPU plugin, which fuses them into int8 kernels; measured on a
ResNet18 rd graph, OpenVINO runs it exactly as fast as the same quantization done on OpenVINO's own model
format, and the artifact stays one ONNX file with adkd's metadata (``model.ov.int8.onnx``) that the registry,
``adkd predict`` and the served model pick up like the others.

As with ONNX Runtime's int8 (``adkd.pipelines.export.quantize``), only the network's nodes are quantized
(preprocessing, the anomaly map, its smoothing and the scores stay float), activation ranges are calibrated
on the calibration half of the validation normals, the image threshold is refitted on the int8 graph's own
scores of those images (as OpenVINO computes them), and ``int8_gate`` compares the file, run by OpenVINO,
with the fp32 model on the held-out half; a refused model leaves no file behind.

Both of NNCF's presets are quantized and gated on the same split: performance (symmetric activations) and mixed
(asymmetric activations, their zero points fitted to each tensor's range). Of those that pass, the file whose
held-out image scores agree most with the fp32 model's (the gate's score correlation; performance on a tie) is
kept, and the metadata's ``int8_candidates`` records each preset's correlation or refusal. Passing the gate's
bounds was not enough on rd (ResNet18, bottle 256 px, 3 epochs, `benchmarks/int8_runtimes.py`'s model): the
performance preset passed (score r 0.9983) yet lost 1.03 points of test image AUROC, the mixed one (r 0.9989)
0.47; on an earlier rd model the gate refused the performance preset outright. The closer one can be the
slower one (rd at batch 1: mixed 0.36x ONNX Runtime fp32, performance 0.26x), still well under fp32; the export
pays one more NNCF pass and gate, on one fp32 scoring of the gate images shared by both.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from adkd.pipelines.export.graph_metadata import save_replacing, update_props
from adkd.pipelines.export.int8_gate import Int8Gate
from adkd.pipelines.export.onnx_export import INPUT_NAME, ExportError, read_metadata, set_metadata
from adkd.pipelines.export.quantize import (
    _NOT_COPIED,
    _raw_metadata,
    calibration_batches,
    gate_reference,
    gated_int8,
    network_nodes,
)

OV_INT8_SUFFIX = ".ov.int8.onnx"  # adkd.pipelines.predict.runtimes.SUFFIXES["openvino-int8"]
# Recorded as int8_scheme: NNCF's presets for OpenVINO's CPU plugin, in the order they are tried.
SCHEMES = {"performance": "nncf-openvino", "mixed": "nncf-openvino-mixed"}


class OpenVinoQuantizationRefused(ExportError):
    """The OpenVINO int8 model disagrees with the fp32 one on the gate images."""


def ov_int8_path_for(fp32_path: str | Path) -> Path:
    """``model.onnx`` → ``model.ov.int8.onnx``."""
    path = Path(fp32_path)
    return path.with_name(path.name.removesuffix(".onnx") + OV_INT8_SUFFIX)


def float_nodes(model: Any) -> list[str]:
    """Names of the nodes outside the network (preprocessing, anomaly map, scores): NNCF leaves them float."""
    network = set(network_nodes(model))
    return [node.name for node in model.graph.node if node.name not in network]


def _quiet_nncf() -> None:
    # NNCF logs every skipped quantizer at INFO and draws progress bars; adkd reports the gate instead.
    logging.getLogger("nncf").setLevel(logging.ERROR)


def nncf_quantize(source: Path, calibration: np.ndarray, out: Path, preset: str = "performance") -> Path:
    """Write NNCF's int8 QDQ graph of ``source`` to ``out``, calibrated on uint8 NHWC ``calibration``, with
    NNCF's ``preset`` (a key of ``SCHEMES``).

    The graph is first simplified as for ONNX Runtime's int8 (constants folded), so the score normalisation's
    range is one constant that the int8 thresholds can replace. Metadata carries over as ``quantize_graph``'s.
    """
    import nncf
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _quiet_nncf()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".nncf-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
    ignored = float_nodes(model)
    if len(ignored) == len(model.graph.node):
        raise ExportError(f"{source}: no /model/ nodes to quantize; was it written by adkd export?")
    calibration, step = calibration_batches(read_metadata(source), calibration, 1)  # tiled: the graph's tiles
    items = [{INPUT_NAME: np.ascontiguousarray(calibration[i : i + step])} for i in range(0, len(calibration), step)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            subset_size=len(items),
            preset=getattr(nncf.QuantizationPreset, preset.upper()),
            target_device=nncf.TargetDevice.CPU,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
        )
    del quantized.metadata_props[:]  # the fp32 file's metadata, chosen below, not what the tools carried along
    props = {k: v for k, v in _raw_metadata(source).items() if k not in _NOT_COPIED}
    update_props(quantized, {**props, "precision": "int8", "int8_scheme": SCHEMES[preset], "runtime": "openvino"})
    save_replacing(quantized, out)
    return out


def quantize_openvino(
    fp32_path: str | Path, validation_images: np.ndarray, out_path: str | Path | None = None, **gate: Any
) -> tuple[Path, Int8Gate]:
    """Write ``model.ov.int8.onnx`` beside ``fp32_path`` (or at ``out_path``): the preset that passes the gate
    with the highest held-out score correlation.

    The arguments are ``quantize.quantize_onnx``'s (``gate``: ``quantize.gated_int8``'s keywords): the run's
    validation normals (uint8 [N,S,S,3]), split by ``seed`` into the calibration part (activation ranges, the
    int8 thresholds fitted on OpenVINO's scores) and the held-out part the gate measures on. Raises
    ``OpenVinoQuantizationRefused`` (one line, each preset's reasons) when no preset passes, unless
    ``enforce_gate`` is False (benchmarks; the gate is returned either way). Nothing but the kept file stays.
    """
    fp32_path = Path(fp32_path)
    out = Path(out_path) if out_path else ov_int8_path_for(fp32_path)
    if gate.get("reference") is None:  # both presets are gated against one scoring of the fp32 file
        shared = ("valid", "seed", "threshold_quantile", "source", "threads")
        gate["reference"] = gate_reference(fp32_path, validation_images, **{k: gate[k] for k in shared if k in gate})
    refusals: list[str] = []
    passed: dict[str, tuple[Path, Int8Gate]] = {}
    try:
        for preset in SCHEMES:
            try:
                passed[preset] = gated_int8(
                    fp32_path,
                    validation_images,
                    out.with_name(f".{preset}-{out.name}"),
                    lambda calibration, staged, preset=preset: nncf_quantize(fp32_path, calibration, staged, preset),
                    OpenVinoQuantizationRefused,
                    f"OpenVINO int8 model ({preset} preset)",
                    **gate,
                )
            except OpenVinoQuantizationRefused as exc:
                refusals.append(str(exc))
        if not passed:
            raise OpenVinoQuantizationRefused("; and ".join(refusals))
        kept = max(passed, key=lambda preset: passed[preset][1].score_correlation)  # the first on a tie
        candidates = {
            SCHEMES[p]: round(passed[p][1].score_correlation, 6) if p in passed else "refused" for p in SCHEMES
        }
        set_metadata(passed[kept][0], {"int8_candidates": json.dumps(candidates, sort_keys=True)})
        passed[kept][0].replace(out)
        return out, passed[kept][1]
    finally:
        for path, _ in passed.values():
            path.unlink(missing_ok=True)
