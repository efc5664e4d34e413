"""int8 ONNX for CPU inference: static quantization of the network, gated on agreement with fp32.

The exported fp32 graph (uint8 image in; anomaly map, image score, normalised score out) is quantized
with ONNX Runtime's static quantizer in one of ``INT8_SCHEMES`` (format and int8 types), per-channel
weights. Only the network's nodes (``/model/...`` apart from the anomaly-map head) are quantized:
preprocessing, the anomaly map, its Gaussian smoothing and the scores stay float, so the outputs keep their
meaning.

The run's validation normals are split in two (``int8_gate.split_validation``). The activation ranges are
calibrated on the first part, and the int8 graph's own thresholds are fitted there on its own outputs (as
fp32's are on its outputs): quantization shifts the scores while keeping their order. The gate
(``int8_gate.int8_gate``) then measures on the held-out part, which neither step saw, and on a
synthetic-defect copy of each held-out image. A refused model leaves no file behind; the refusal is one line.
``gated_int8`` does those steps around any graph writer: ``quantize_onnx`` and OpenVINO's ``quantize_openvino``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adkd.errors import ConfigError
from adkd.pipelines.export.graph_metadata import save_replacing, update_props
from adkd.pipelines.export.int8_gate import (
    DEFAULT_BOUNDS,
    GateBounds,
    GateImages,
    GateScores,
    Int8Gate,
    gate_images,
    gate_scores,
    int8_gate,
)
from adkd.pipelines.export.onnx_export import INPUT_NAME, OUTPUT_NAMES, ExportError, read_metadata, set_metadata
from adkd.pipelines.export.schemes import DEFAULT_INT8_SCHEME, INT8_SCHEMES, INT8_SUFFIX, check_scheme

# Post-processing modules of the models, by their ONNX name scope: kept in float.
_FLOAT_SCOPES = ("/model/anomaly_map",)
# Metadata of the fp32 file that does not describe the int8 one (it gets its own; its thresholds are refitted).
_NOT_COPIED = ("parity", "metrics", "thresholds_fitted_on", "runtime_choice", "variant_records")

__all__ = [
    "DEFAULT_INT8_SCHEME",
    "INT8_SCHEMES",
    "INT8_SUFFIX",
    "QuantizationRefused",
    "check_scheme",
    "fit_artifact_thresholds",
    "int8_path_for",
    "is_int8_path",
    "quantize_graph",
    "quantize_onnx",
    "run_graph",
]


class QuantizationRefused(ExportError):
    """The int8 model disagrees with the fp32 one on the held-out validation images."""


def int8_path_for(fp32_path: str | Path) -> Path:
    """``model.onnx`` → ``model.int8.onnx``."""
    path = Path(fp32_path)
    return path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)


def is_int8_path(path: str | Path) -> bool:
    return Path(path).name.endswith(INT8_SUFFIX)


def network_nodes(model: Any) -> list[str]:
    """Names of the nodes that belong to the network (quantized), not to pre- or post-processing."""
    names = []
    for node in model.graph.node:
        # A per-position model holds its models' anomaly maps deeper (/model/models.0/anomaly_map/...).
        if (
            node.name.startswith("/model/")
            and not node.name.startswith(_FLOAT_SCOPES)
            and "/anomaly_map/" not in node.name
        ):
            names.append(node.name)
    return names


class _Batches:
    """CalibrationDataReader over uint8 NHWC images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = (
            {INPUT_NAME: np.ascontiguousarray(images[i : i + batch_size])} for i in range(0, len(images), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def run_graph(path: Path, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps [N,1,h,w], scores [N] and normalised scores [N] of an adkd ONNX file on uint8 NHWC images (raw
    ONNX Runtime, for looking inside a graph; scoring for metrics goes through the predictor)."""
    import onnxruntime as ort

    from adkd.pipelines.predict.onnx_predictor import session_options

    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    outs: list[list[np.ndarray]] = [[], [], []]
    for i in range(0, len(images), batch_size):
        for acc, value in zip(outs, session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i : i + batch_size]})):
            acc.append(value)
    maps, scores, norms = (np.concatenate(o) for o in outs)
    return maps, scores.reshape(-1), norms.reshape(-1)


def fit_artifact_thresholds(
    path: Path,
    images: np.ndarray | torch.Tensor,
    quantile: float,
    valid: torch.Tensor | None = None,
    runtime: str = "auto",
    threads: int | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Fit ``path``'s thresholds on its own outputs for held-out normal ``images`` and write them into it.

    Scored by the predictor ``adkd predict`` uses (``runtime``: pass the file's own, e.g. ``onnxruntime`` for
    an fp32 file), letterbox padding left out (``valid``); the graph's normalisation constants and its
    metadata get the fitted values. Returns them and the images' scores.
    """
    from adkd.pipelines.evaluate.thresholds import fit_thresholds
    from adkd.pipelines.export.onnx_export import write_thresholds
    from adkd.pipelines.inference.artifact import score_artifact
    from adkd.pipelines.predict import open_predictor

    maps, scores = score_artifact(open_predictor(path, runtime=runtime, threads=threads), images, valid)
    # The file's own scores of those normals travel with it: `adkd monitor` compares production scores with them.
    normals = {"quantile": quantile, "scores": [float(s) for s in scores.reshape(-1).tolist()]}
    fitted = write_thresholds(
        path, fit_thresholds(scores, maps, quantile, valid=valid), {"normal_scores": json.dumps(normals)}
    )
    return fitted, scores


def _raw_metadata(path: Path) -> dict[str, str]:
    """The file's metadata_props as stored (strings)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (avx512_vnni, avx_vnni or AMX int8).

    Without them ONNX Runtime's x86 int8 kernels add pairs of u8 x s8 products in 16 bits, which saturates on
    8-bit weights; its documentation prescribes ``reduce_range`` (7-bit weights) on such CPUs.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(line.split(":", 1)[1].split()))
    return bool(torch.cpu._is_vnni_supported())  # another OS: torch's check (avx512_vnni only)


def quantize_graph(
    source: Path,
    calibration: np.ndarray,
    out: Path,
    scheme: str = DEFAULT_INT8_SCHEME,
    batch_size: int = 8,
    reduce_range: bool | None = None,
) -> Path:
    """Write ``source``'s network quantized in ``scheme`` to ``out``, activation ranges from ``calibration``
    (uint8 NHWC). Metadata of ``source`` carries over except its parity, metrics and thresholds. No gate.

    ``reduce_range``: 7-bit weights; None = where this CPU lacks VNNI (``cpu_has_vnni``). Measured on an AMD EPYC
    with avx2 alone (stfpm MobileNetV2, 64 px, untrained): image scores up to 6.3 % off fp32 with 8-bit weights,
    2.1 % with 7-bit. The gate, which runs on this CPU too, judges the file either way; the metadata records it.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_format, activation_type, weight_type = INT8_SCHEMES[check_scheme(scheme)]
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    calibration, batch_size = calibration_batches(read_metadata(source), calibration, batch_size)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        nodes = network_nodes(onnx.load(str(pre)))
        if not nodes:
            raise ExportError(f"{source}: no /model/ nodes to quantize; was it written by adkd export?")
        quantize_static(
            str(pre),
            str(out),
            _Batches(calibration, batch_size),
            quant_format=QuantFormat[quant_format],
            per_channel=True,
            activation_type=QuantType[activation_type],
            weight_type=QuantType[weight_type],
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=reduce_range,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    proto = onnx.load(str(out))  # the quantizer keeps the source's metadata: drop what is fp32's alone
    for prop in [p for p in proto.metadata_props if p.key in _NOT_COPIED]:
        proto.metadata_props.remove(prop)
    update_props(proto, {"precision": "int8", "int8_scheme": scheme, "int8_weight_bits": "7" if reduce_range else "8"})
    save_replacing(proto, out)
    return out


def _check_images(images: np.ndarray, size: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ConfigError(f"validation images must be uint8 [N,{size},{size},3], got {images.dtype} {images.shape}")
    return images


def validation_view(meta: dict[str, Any], images: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(checked images, the maps' side) for the gate: a tiled model takes whole images and maps them whole."""
    from adkd.pipelines.tiling.spec import TilingSpec

    size = int(meta["image_size"])
    if TilingSpec.from_meta(meta) is not None:  # the predictor tiles and stitches: any same-size whole images
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(f"validation images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
        return images, None
    return _check_images(images, size), int(meta.get("eval_size") or size)


def calibration_batches(meta: dict[str, Any], images: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """What the graph itself takes for calibration: the images, or a tiled model's tiles (whole groups)."""
    from adkd.pipelines.tiling.spec import TilingSpec

    spec = TilingSpec.from_meta(meta)
    if spec is None:
        return images, batch_size
    return spec.tiles(images), spec.tiles_per_call(batch_size)


def _gate_set(
    fp32_path: Path, validation_images: np.ndarray, valid: torch.Tensor | None, seed: int, quantile: float, source: str
) -> GateImages:
    """The gate images of ``fp32_path``'s model from the run's validation normals (``int8_gate.gate_images``)."""
    images, map_size = validation_view(read_metadata(fp32_path), validation_images)  # tiled: whole images
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return gate_images(nchw, seed, quantile, valid=valid, map_size=map_size, source=source)


def gate_reference(
    fp32_path: str | Path,
    validation_images: np.ndarray,
    *,
    valid: torch.Tensor | None = None,
    seed: int = 0,
    threshold_quantile: float = 0.99,
    source: str = "validation images",
    threads: int | None = None,
) -> GateScores:
    """The fp32 file's scores (ONNX Runtime) of the gate images ``gated_int8`` makes from the same arguments: pass
    them as its ``reference`` to gate several int8 models of one file on a single fp32 scoring."""
    from adkd.pipelines.predict import open_predictor

    gate_set = _gate_set(Path(fp32_path), validation_images, valid, seed, threshold_quantile, source)
    return gate_scores(open_predictor(fp32_path, runtime="onnxruntime", threads=threads), gate_set)


def gated_int8(
    fp32_path: str | Path,
    validation_images: np.ndarray,
    out: Path,
    write_graph: Callable[[np.ndarray, Path], Path],
    refused: type[ExportError],
    label: str,
    hint: str = "",
    *,
    valid: torch.Tensor | None = None,
    seed: int = 0,
    threshold_quantile: float = 0.99,
    bounds: GateBounds = DEFAULT_BOUNDS,
    enforce_gate: bool = True,
    source: str = "validation images",
    threads: int | None = None,
    reference: GateScores | None = None,
) -> tuple[Path, Int8Gate]:
    """Write an int8 model of ``fp32_path`` at ``out`` if it passes the gate; (path, gate).

    ``write_graph(calibration images, path)`` writes the quantized graph (ONNX Runtime's or NNCF's) to a staged
    path. The validation normals are split by ``seed``: the int8 file's thresholds are fitted on its own scores
    of the calibration part, run by what it was made for, and ``int8_gate`` compares it with the fp32 file on
    ONNX Runtime (``reference``: the fp32 file's ``gate_reference`` when the caller has it) on the held-out part.
    A failed gate raises ``refused`` (one line: ``label``, the problems, ``hint``) unless ``enforce_gate`` is
    False; a refused model leaves no file behind.
    """
    from adkd.pipelines.predict import open_predictor

    fp32_path, out = Path(fp32_path), Path(out)
    # The reference was scored on the gate images these arguments make: reuse them rather than build them again.
    gate_set = (
        reference.images
        if reference is not None
        else _gate_set(fp32_path, validation_images, valid, seed, threshold_quantile, source)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as tmp:
        staged = write_graph(gate_set.calibration, Path(tmp) / out.name)
        # Each file on its own runtime: "auto" runs an int8 file as what it was made for.
        fit_artifact_thresholds(staged, gate_set.calibration, threshold_quantile, gate_set.valid_calibration,
                                "auto", threads)  # fmt: skip
        fp32 = reference or open_predictor(fp32_path, runtime="onnxruntime", threads=threads)
        gate = int8_gate(fp32, open_predictor(staged, runtime="auto", threads=threads), gate_set, bounds)
        problems = gate.problems()
        if enforce_gate and problems:
            raise refused(
                f"{label} of {fp32_path.name} refused on {gate.n_normals} held-out {source}: "
                f"{'; '.join(problems)}; keep the fp32 model{hint}"
            )
        set_metadata(staged, {"int8_gate": json.dumps(gate.to_dict(), sort_keys=True, default=float)})
        staged.replace(out)
    return out, gate


def quantize_onnx(
    fp32_path: str | Path,
    validation_images: np.ndarray,
    out_path: str | Path | None = None,
    *,
    scheme: str = DEFAULT_INT8_SCHEME,
    graph: str | Path | None = None,
    **gate: Any,
) -> tuple[Path, Int8Gate]:
    """Write ONNX Runtime's int8 model beside ``fp32_path`` (or at ``out_path``) if it passes the gate; (path, gate).

    ``validation_images``: the run's held-out normals, uint8 [N,S,S,3] at the model's input size (at least
    ``int8_gate.MIN_VALIDATION_IMAGES``); ``gate``: ``gated_int8``'s keywords (``valid``: their image area, bool
    [N,1,S,S], letterbox; ``seed`` splits them into calibration and held-out parts; ``bounds``, ``enforce_gate``:
    False for benchmarks timing the graph, the numbers are returned; ``threshold_quantile``, ``source``,
    ``threads``, ``reference``). ``graph``: the graph to quantize when it is not ``fp32_path`` itself (the gate
    still compares with ``fp32_path``; tests quantize a degraded copy). ``scheme``: one of ``INT8_SCHEMES``.
    Raises QuantizationRefused (one line) when the gate fails.
    """
    check_scheme(scheme)
    source = Path(graph or fp32_path)
    # The same gate refuses for `adkd export --int8` and for a training run: name both ways to set the scheme.
    hint = "" if scheme == "qdq-s8s8" else ", or try the qdq-s8s8 scheme (int8 activations; --int8-scheme, int8_scheme)"
    return gated_int8(
        fp32_path,
        validation_images,
        Path(out_path) if out_path else int8_path_for(fp32_path),
        lambda calibration, staged: quantize_graph(source, calibration, staged, scheme),
        QuantizationRefused,
        "int8 model",
        hint,
        **gate,
    )
