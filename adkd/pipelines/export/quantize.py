"""int8 ONNX for CPU inference: static quantization of the network, gated on agreement with fp32.

The exported fp32 graph (uint8 image in; anomaly map, image score, normalised score out) is quantized
with ONNX Runtime's static quantizer in one of ``INT8_SCHEMES`` (format and int8 types), per-channel
weights, activation ranges calibrated on
held-out normal images (the validation split, never the test split). Only the network's nodes
(``/model/...`` apart from the anomaly-map head) are quantized: preprocessing, the anomaly map, its
Gaussian smoothing and the scores stay float, so the outputs keep their meaning and the thresholds hold.

Quantization shifts the scores (its noise adds to the teacher-student distance) while keeping their order,
so the int8 graph gets its own thresholds, fitted on the same validation images with the same quantile as
training fitted fp32's (``refit_thresholds``); they replace the constants in the graph and the metadata.

An accuracy gate then runs both graphs on validation images and refuses the int8 model when the image
scores correlate less than ``MIN_SCORE_CORRELATION`` with fp32's or a verdict (score > image threshold)
flips on an image that is not at the threshold itself: the thresholds are the same high quantile of the
validation images' scores in each model, so a flip among those images is the two models ordering their top
images differently (``count_flips``), as is a flip of an image fp32 scores within ``NEAR_THRESHOLD`` of it.
The gate images are the validation images as they are and each once more with a synthetic defect (as
``adkd tune`` scores trials), so scores spread and the image AUROC on them may drop by at most
``MAX_AUROC_DROP``. A refused model leaves no file behind.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adkd.errors import ConfigError
from adkd.pipelines.export.onnx_export import INPUT_NAME, OUTPUT_NAMES, ExportError, _set_metadata, read_metadata
from adkd.pipelines.train.config import TrainConfig

INT8_SUFFIX = ".int8.onnx"
MIN_SCORE_CORRELATION = 0.95  # Pearson r of int8 vs fp32 image scores on the validation images
MIN_IMAGES = 4
MAX_AUROC_DROP = 0.01  # image AUROC on validation images with synthetic defects, int8 vs fp32
NEAR_THRESHOLD = 0.02  # |normalised fp32 score - 0.5| below this: a flip there does not count
# Post-processing modules of the models, by their ONNX name scope: kept in float.
_FLOAT_SCOPES = ("/model/anomaly_map",)

# ONNX Runtime's static-quantization layouts, by name: format (QDQ pairs around float ops, or QOperator
# QLinear* ops) and activation/weight types. Speed differs by CPU (benchmarks/int8_variants.py).
INT8_SCHEMES: dict[str, tuple[str, str, str]] = {
    "qdq-s8s8": ("QDQ", "QInt8", "QInt8"),  # ONNX Runtime's first suggestion; the slowest here
    # The default: 0.76-0.80x fp32 at batch 1 on the real bottle against 1.21-1.31x for qdq-s8s8, same AUROC.
    # On CPUs without VNNI, u8 x s8 products can saturate; the gate then refuses and qdq-s8s8 is the one to try.
    "qdq-u8s8": ("QDQ", "QUInt8", "QInt8"),
    "qop-u8s8": ("QOperator", "QUInt8", "QInt8"),
}
# No u8 weights: ONNX Runtime's QLinearConv quantizer writes per-channel weights as int8 whatever is asked.
DEFAULT_INT8_SCHEME: str = TrainConfig.model_fields["int8_scheme"].default  # the setting's default, defined once


def check_scheme(scheme: str) -> str:
    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"int8 scheme '{scheme}' is not one of {', '.join(INT8_SCHEMES)}")
    return scheme


class QuantizationRefused(ExportError):
    """The int8 model disagrees with the fp32 one on the validation images."""


def int8_path_for(fp32_path: str | Path) -> Path:
    """``model.onnx`` → ``model.int8.onnx``."""
    path = Path(fp32_path)
    return path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)


def is_int8_path(path: str | Path) -> bool:
    return Path(path).name.endswith(INT8_SUFFIX)


@dataclass
class Int8Gate:
    """How the int8 model compares with the fp32 one on the gate images."""

    n_images: int
    score_correlation: float
    verdicts_moved: int  # flips of images clearly on one side of the threshold (these fail the gate)
    flips_at_threshold: int  # flips that are reorderings at the threshold, not moved verdicts (reported only)
    max_normalized_diff: float
    image_threshold: float
    min_correlation: float
    source: str
    fp32_image_auroc: float | None = None  # on the labelled gate images (synthetic defects), when given
    int8_image_auroc: float | None = None

    @property
    def auroc_drop(self) -> float:
        if self.fp32_image_auroc is None or self.int8_image_auroc is None:
            return 0.0
        return self.fp32_image_auroc - self.int8_image_auroc

    @property
    def ok(self) -> bool:
        return (
            self.score_correlation >= self.min_correlation
            and self.verdicts_moved == 0
            and self.auroc_drop <= MAX_AUROC_DROP
        )

    def problems(self) -> str:
        out = []
        if self.score_correlation < self.min_correlation:
            out.append(
                f"image scores correlate {self.score_correlation:.4f} with fp32's (needs >= {self.min_correlation})"
            )
        if self.verdicts_moved:
            out.append(f"{self.verdicts_moved} verdict(s) moved")
        if self.auroc_drop > MAX_AUROC_DROP:
            out.append(
                f"image AUROC on synthetic defects fell {self.fp32_image_auroc:.4f} -> {self.int8_image_auroc:.4f}"
            )
        return "; ".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def network_nodes(model: Any) -> list[str]:
    """Names of the nodes that belong to the network (quantized), not to pre- or post-processing."""
    names = []
    for node in model.graph.node:
        if node.name.startswith("/model/") and not node.name.startswith(_FLOAT_SCOPES):
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


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_graph(path: Path, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps [N,1,h,w], scores [N] and normalised scores [N] of an adkd ONNX file on uint8 NHWC images."""
    session = _session(path)
    outs: list[list[np.ndarray]] = [[], [], []]
    for i in range(0, len(images), batch_size):
        for acc, value in zip(outs, session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i : i + batch_size]})):
            acc.append(value)
    maps, scores, norms = (np.concatenate(o) for o in outs)
    return maps, scores.reshape(-1), norms.reshape(-1)


def refit_thresholds(path: Path, images: np.ndarray, quantile: float) -> dict[str, float]:
    """Fit ``path``'s thresholds on held-out normal ``images`` and write them into its graph and metadata."""
    import onnx
    import torch
    from onnx import numpy_helper

    from adkd.pipelines.evaluate.thresholds import _MIN_RANGE, fit_thresholds

    maps, scores, _ = run_graph(path, images)
    fitted = fit_thresholds(torch.from_numpy(scores), torch.from_numpy(maps), quantile).to_dict()
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    # normalized_score = clip((image_score - threshold) / range + 0.5): ExportGraph's two constants.
    sub = next(
        (n for n in model.graph.node if n.op_type == "Sub" and list(n.input) == ["image_score", "threshold"]), None
    )
    div = next(
        (n for n in model.graph.node if sub is not None and n.op_type == "Div" and n.input[0] == sub.output[0]), None
    )
    if sub is None or div is None or "threshold" not in inits or div.input[1] not in inits:
        raise ExportError(f"{path}: cannot find the score normalisation (threshold, range) to refit; re-export it")
    span = max(fitted["score_max"] - fitted["score_min"], _MIN_RANGE)
    for name, value in (("threshold", fitted["image"]), (div.input[1], span)):
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    onnx.save(model, str(path))
    _set_metadata(path, {"thresholds": json.dumps(fitted, sort_keys=True)})
    return fitted


def count_flips(
    ref: np.ndarray,
    ref_norm: np.ndarray,
    ref_threshold: float,
    got: np.ndarray,
    got_threshold: float,
    fitted: np.ndarray | None = None,
) -> tuple[int, int]:
    """(verdicts moved, flips at the threshold) between fp32 scores ``ref`` and int8 scores ``got``.

    A flip is at the threshold, and does not count as moved, when fp32 places the image within
    ``NEAR_THRESHOLD`` of its threshold, or when the image is one the int8 threshold was fitted on
    (``fitted``): both thresholds are the same quantile of those very images, so each model flags the same
    number of them, and a flip among them is the two models ordering their top images differently, which
    the score correlation measures.
    """
    flipped = (ref > ref_threshold) != (got > got_threshold)
    near = np.abs(ref_norm - 0.5) < NEAR_THRESHOLD
    if fitted is not None:
        near = near | fitted
    return int(np.sum(flipped & ~near)), int(np.sum(flipped & near))


def _rows_in(images: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each image, whether the same bytes are one of ``pool``'s."""
    keys = {img.tobytes() for img in pool}
    return np.array([img.tobytes() in keys for img in images], dtype=bool)


def compare(
    fp32_path: Path,
    int8_path: Path,
    images: np.ndarray,
    source: str,
    labels: np.ndarray | None = None,
    fitted_on: np.ndarray | None = None,
) -> Int8Gate:
    """The accuracy gate's numbers for ``images`` (uint8 NHWC; ``labels`` 1 = defective, when known).

    Each model's verdict uses its own image threshold (from its metadata); ``fitted_on``: the images the
    int8 thresholds were refitted on (see ``count_flips``).
    """
    from adkd.pipelines.evaluate.metrics import image_auroc

    threshold = float(read_metadata(fp32_path)["thresholds"]["image"])
    own_threshold = float(read_metadata(int8_path)["thresholds"]["image"])
    _, ref, ref_norm = run_graph(fp32_path, images)
    _, got, got_norm = run_graph(int8_path, images)
    if np.std(ref) == 0 or np.std(got) == 0:
        corr = 1.0 if np.allclose(ref, got) else 0.0
    else:
        corr = float(np.corrcoef(ref, got)[0, 1])
    fitted = None if fitted_on is None else _rows_in(images, fitted_on)
    moved, at_threshold = count_flips(ref, ref_norm, threshold, got, own_threshold, fitted)
    return Int8Gate(
        n_images=len(images),
        score_correlation=corr,
        verdicts_moved=moved,
        flips_at_threshold=at_threshold,
        max_normalized_diff=float(np.abs(ref_norm - got_norm).max()),
        image_threshold=threshold,
        min_correlation=MIN_SCORE_CORRELATION,
        source=source,
        fp32_image_auroc=float(image_auroc(ref, labels)) if labels is not None else None,
        int8_image_auroc=float(image_auroc(got, labels)) if labels is not None else None,
    )


def quantize_onnx(
    fp32_path: str | Path,
    calibration_images: np.ndarray,
    out_path: str | Path | None = None,
    *,
    gate_images: np.ndarray | None = None,
    gate_labels: np.ndarray | None = None,
    source: str = "validation images",
    batch_size: int = 8,
    min_correlation: float = MIN_SCORE_CORRELATION,
    enforce_gate: bool = True,
    threshold_quantile: float | None = None,
    scheme: str = DEFAULT_INT8_SCHEME,
) -> tuple[Path, Int8Gate]:
    """Write the int8 model beside ``fp32_path`` (or at ``out_path``) if it passes the gate.

    ``calibration_images``: held-out normal images, uint8 [N, S, S, 3] at the model's input size; they
    calibrate the activation ranges. ``gate_images`` (default: the calibration images) with optional
    ``gate_labels`` are what the gate compares on. ``threshold_quantile``: refit the int8 graph's
    thresholds on the calibration images at this quantile (None keeps fp32's). Raises QuantizationRefused
    when the gate fails, unless ``enforce_gate`` is False (benchmarks timing the graph; the numbers are returned).
    ``scheme``: one of ``INT8_SCHEMES``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_format, activation_type, weight_type = INT8_SCHEMES[check_scheme(scheme)]
    fp32_path = Path(fp32_path)
    out = Path(out_path) if out_path else int8_path_for(fp32_path)
    images = np.asarray(calibration_images)
    size = int(read_metadata(fp32_path)["image_size"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ConfigError(f"calibration images must be uint8 [N,{size},{size},3], got {images.dtype} {images.shape}")
    if len(images) < MIN_IMAGES:
        raise ConfigError(
            f"int8 calibration needs at least {MIN_IMAGES} held-out normal images, got {len(images)}; "
            "raise val_fraction"
        )
    import onnx

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as tmp:
        pre, staged = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        nodes = network_nodes(onnx.load(str(pre)))
        if not nodes:
            raise ExportError(f"{fp32_path}: no /model/ nodes to quantize; was it written by adkd export?")
        quantize_static(
            str(pre),
            str(staged),
            _Batches(images, batch_size),
            quant_format=QuantFormat[quant_format],
            per_channel=True,
            activation_type=QuantType[activation_type],
            weight_type=QuantType[weight_type],
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        props = {k: v for k, v in _raw_metadata(fp32_path).items() if k != "parity"}
        _set_metadata(staged, props)
        if threshold_quantile is not None:
            refit_thresholds(staged, images, threshold_quantile)
        fitted_on = images if threshold_quantile is not None else None
        gate_on = images if gate_images is None else gate_images
        gate = compare(fp32_path, staged, gate_on, source, gate_labels, fitted_on)
        gate.min_correlation = min_correlation
        if enforce_gate and not gate.ok:
            raise QuantizationRefused(
                f"int8 model of {fp32_path.name} refused on {gate.n_images} {source}: {gate.problems()}; "
                "keep the fp32 model"
                + ("" if scheme == "qdq-s8s8" else ", or try --int8-scheme qdq-s8s8 (int8 activations)")
            )
        gate_json = json.dumps(gate.to_dict(), sort_keys=True)
        _set_metadata(staged, {"precision": "int8", "int8_scheme": scheme, "int8_gate": gate_json})
        staged.replace(out)
    return out, gate


def _raw_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@dataclass
class Int8Export:
    """An int8 export: the file, its gate, and (for the report only) both models' test-split metrics."""

    path: Path
    gate: Int8Gate
    test_metrics: dict[str, dict[str, float]]  # {"fp32": {...}, "int8": {...}}; empty without a test split
    scheme: str = DEFAULT_INT8_SCHEME


def _nhwc(images: Any) -> np.ndarray:
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def test_split_metrics(paths: dict[str, Path], data: Any, eval_size: int) -> dict[str, dict[str, float]]:
    """Image/pixel AUROC, AUPRO and F1-max of each ONNX file on the test split (reported, never used to choose)."""
    from adkd.pipelines.evaluate.metrics import compute_metrics

    if len(data.test) == 0 or len(set(data.test_labels.tolist())) < 2:
        return {}
    images = _nhwc(data.test)
    o = (data.test.shape[-1] - eval_size) // 2
    masks = data.test_masks[..., o : o + eval_size, o : o + eval_size]
    out = {}
    for name, path in paths.items():
        maps, scores, _ = run_graph(path, images)
        out[name] = {k: float(v) for k, v in compute_metrics(maps, scores, masks, data.test_labels).items()}
    return out


def export_int8(
    checkpoint: str | Path,
    fp32_path: str | Path,
    out_path: str | Path | None = None,
    scheme: str | None = None,
    *,
    enforce_gate: bool = True,
) -> Int8Export:
    """Quantize ``fp32_path`` (the checkpoint's fp32 export), calibrated and gated on the run's validation images.

    ``scheme`` defaults to the run's ``int8_scheme``; ``enforce_gate=False`` keeps a refused model (benchmarks).
    """
    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint

    _, config, _ = load_model_from_checkpoint(checkpoint)
    scheme = check_scheme(scheme or config.int8_scheme)
    root = Path(str(config.data)).expanduser()
    if not (root / config.category).is_dir():
        raise ConfigError(
            f"int8 export calibrates on the run's validation images, but {root / config.category} is not there; "
            "run it where the training data is"
        )
    # The training split (same val_fraction and seed), uncropped: the ONNX graph takes image_size and crops inside.
    data = load_category(
        root, config.category, config.image_size, crop_size=None, val_fraction=config.val_fraction, seed=config.seed
    )
    if len(data.val) < MIN_IMAGES:
        raise ConfigError(
            f"int8 export needs at least {MIN_IMAGES} validation images; the run has {len(data.val)} "
            f"(val_fraction={config.val_fraction}); retrain with a larger val_fraction"
        )
    from adkd.pipelines.data.synthetic_defects import with_synthetic_defects

    labelled = with_synthetic_defects(data.val, seed=config.seed)
    source = f"validation images of {config.data}/{config.category} (each also with a synthetic defect)"
    path, gate = quantize_onnx(
        fp32_path,
        _nhwc(data.val),
        out_path,
        gate_images=_nhwc(labelled.images),
        gate_labels=labelled.labels.numpy(),
        source=source,
        threshold_quantile=config.threshold_quantile,
        scheme=scheme,
        enforce_gate=enforce_gate,
    )
    metrics = test_split_metrics({"fp32": Path(fp32_path), "int8": path}, data, config.eval_size)
    if metrics:
        _set_metadata(path, {"test_metrics": json.dumps(metrics, sort_keys=True)})
    return Int8Export(path=path, gate=gate, test_metrics=metrics, scheme=scheme)
