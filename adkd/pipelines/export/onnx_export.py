"""Export a trained model to ONNX with preprocessing inside the graph, and prove it equals PyTorch.

The graph takes uint8 RGB images ``[B, H, W, 3]`` of the trained image size (batch dynamic), resizes,
centre-crops (when the model was trained on crops) and normalises them, runs the eval path and returns
``anomaly_map [B,1,h,w]``, ``image_score [B]`` and ``normalized_score [B]`` (0.5 = image threshold).
Every export is run through onnxruntime and compared with PyTorch on the same images; a mismatch
raises ``ExportError`` and leaves no ``.onnx`` file behind.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.evaluate.thresholds import MIN_RANGE, normalize_scores
from adkd.pipelines.export.graph_metadata import (  # noqa: F401 (the names importers of this module use)
    INPUT_NAME,
    OPSET,
    OUTPUT_NAMES,
    meta_props,
    read_metadata,
    save_replacing,
    set_metadata,
    update_props,
)

MAP_TOLERANCE = 1e-4  # max |ORT - torch| of the maps, as a fraction of the torch map's range
SCORE_TOLERANCE = 1e-5  # max |ORT - torch| of the scores, relative to max(1, |score|)


class ExportError(AdkdError):
    """The ONNX export failed or the exported graph does not reproduce the PyTorch model."""


class ExportGraph(nn.Module):
    """uint8 NHWC images → (anomaly_map, image_score, normalized_score): what the ONNX file computes."""

    def __init__(
        self,
        model: nn.Module,
        image_size: int,
        thresholds: Any,
        eval_size: int | None = None,
    ) -> None:
        super().__init__()
        from adkd.models.preprocess import Preprocess

        t = _thresholds_dict(thresholds)
        self.image_size = int(image_size)
        self.eval_size = int(eval_size or image_size)
        if self.eval_size > self.image_size:
            raise ConfigError(f"eval_size {self.eval_size} is larger than image_size {self.image_size}")
        self.preprocess = Preprocess(self.image_size, channels_last=True)
        self.model = model.eval()
        # Same centre crop as the data loader: offset (size - crop) // 2.
        self.offset = (self.image_size - self.eval_size) // 2
        for name, key in (("threshold", "image"), ("score_min", "score_min"), ("score_max", "score_max")):
            self.register_buffer(name, torch.tensor(t[key], dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocess(images)
        if self.eval_size != self.image_size:
            o, s = self.offset, self.eval_size
            x = x[:, :, o : o + s, o : o + s]
        anomaly_map, score = self.model(x)
        normalized = normalize_scores(score, self.threshold, self.score_min, self.score_max)
        return anomaly_map, score, normalized


@dataclass
class ParityReport:
    """How closely onnxruntime reproduced PyTorch on the verification images."""

    n_images: int
    max_map_diff: float
    map_range: float
    max_score_diff: float
    max_normalized_diff: float
    map_tolerance: float
    score_tolerance: float
    source: str  # where the verification images came from

    @property
    def ok(self) -> bool:
        return self.max_map_diff <= self.map_tolerance and self.max_score_diff <= self.score_tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _thresholds_dict(thresholds: Any) -> dict[str, float]:
    if thresholds is None:
        raise ConfigError("export needs the model's thresholds (image, pixel, score_min, score_max); retrain")
    data = thresholds.to_dict() if hasattr(thresholds, "to_dict") else dict(thresholds)
    missing = [k for k in ("image", "score_min", "score_max") if k not in data]
    if missing:
        raise ConfigError(f"thresholds lack {', '.join(missing)}; re-run training to store them")
    out = {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"thresholds {', '.join(bad)} are not finite; re-run training")
    return out


def _torch_export(graph: ExportGraph, dummy: torch.Tensor, path: Path, opset: int) -> None:
    dynamic_axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the one that writes opset 17
        # graphs with Resize/ReduceMax reliably for these models; its warnings are noise for the user.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    from adkd.pipelines.predict.onnx_predictor import session_options

    return ort.InferenceSession(str(path), sess_options=session_options(), providers=["CPUExecutionProvider"])


def _noise_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (low-frequency patterns plus noise), [n, size, size, 3]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noisy = (smooth * 200 + torch.rand(n, 3, size, size, generator=gen) * 55).clamp(0, 255)
    return noisy.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def verify_onnx(
    path: str | Path,
    graph: ExportGraph,
    images: torch.Tensor,
    source: str = "given images",
    batch_size: int = 4,
) -> ParityReport:
    """Run ``images`` (uint8 [N,H,W,3]) through onnxruntime and PyTorch and compare the outputs."""
    session = _ort_session(Path(path))
    graph.eval()
    map_diff = score_diff = norm_diff = 0.0
    lo, hi = math.inf, -math.inf
    score_scale = 1.0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            ref_map, ref_score, ref_norm = (t.float().numpy() for t in graph(batch))
            ort_map, ort_score, ort_norm = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch.numpy()})
            if ort_map.shape != ref_map.shape or ort_score.shape != ref_score.shape:
                raise ExportError(
                    f"ONNX output shapes {ort_map.shape}, {ort_score.shape} differ from PyTorch's "
                    f"{ref_map.shape}, {ref_score.shape} ({path})"
                )
            map_diff = max(map_diff, float(np.abs(ort_map - ref_map).max()))
            score_diff = max(score_diff, float(np.abs(ort_score - ref_score).max()))
            norm_diff = max(norm_diff, float(np.abs(ort_norm - ref_norm).max()))
            lo, hi = min(lo, float(ref_map.min())), max(hi, float(ref_map.max()))
            score_scale = max(score_scale, float(np.abs(ref_score).max()))
    map_range = max(hi - lo, 0.0)
    map_tolerance = MAP_TOLERANCE * max(map_range, MIN_RANGE)
    return ParityReport(
        n_images=len(images),
        max_map_diff=map_diff,
        map_range=map_range,
        max_score_diff=score_diff,
        max_normalized_diff=norm_diff,
        map_tolerance=map_tolerance,
        # The image score is the map's maximum, so it can be off by as much as the map is: a score error
        # within the map's tolerance is the same agreement (seen: mrkd on CIFAR, 6.6e-5 on a score of 2.8).
        score_tolerance=max(SCORE_TOLERANCE * score_scale, map_tolerance),
        source=source,
    )


def export_onnx(
    model: nn.Module,
    out_path: str | Path,
    image_size: int,
    thresholds: Any,
    meta: dict[str, Any] | None = None,
    *,
    eval_size: int | None = None,
    verify_images: torch.Tensor | None = None,
    verify_source: str = "given images",
    opset: int = OPSET,
) -> Path:
    """Write ``out_path`` (ONNX, opset ``opset``) and verify it with onnxruntime; returns the path.

    ``verify_images``: uint8 [N, image_size, image_size, 3] real images; without them the check
    uses deterministic synthetic images. A failed check raises ExportError and removes the file.
    """
    import onnx

    from adkd.version import __version__

    if opset < 17:
        raise ConfigError(f"opset {opset} is too old: adkd exports opset >= 17")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(model, image_size, thresholds, eval_size=eval_size).cpu().eval()
    if verify_images is None:
        verify_images, verify_source = _noise_images(3, graph.image_size), "synthetic images"
    verify_images = verify_images.to(torch.uint8)
    expected = (graph.image_size, graph.image_size, 3)
    if verify_images.ndim != 4 or tuple(verify_images.shape[1:]) != expected:
        raise ConfigError(
            f"verification images must be uint8 [N,{graph.image_size},{graph.image_size},3], "
            f"got {tuple(verify_images.shape)}"
        )

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        # Batch 2 in the example so the exporter cannot treat the batch axis as a constant 1.
        dummy = verify_images[:2] if len(verify_images) >= 2 else verify_images.repeat(2, 1, 1, 1)
        try:
            _torch_export(graph, dummy.contiguous(), tmp, opset)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {out_path.name}: {type(exc).__name__}: {exc}") from exc
        props = meta_props(
            {
                "adkd_version": __version__,
                "torch_version": torch.__version__,
                "image_size": graph.image_size,
                "eval_size": graph.eval_size,
                "input_format": "uint8 RGB NHWC [batch, image_size, image_size, 3]",
                "outputs": list(OUTPUT_NAMES),
                "thresholds": _thresholds_dict(thresholds),
                **(meta or {}),
            }
        )
        onnx.checker.check_model(str(tmp), full_check=True)  # once, on what torch wrote
        report = verify_onnx(tmp, graph, verify_images, source=verify_source)
        if not report.ok:
            raise ExportError(
                f"ONNX export of {out_path.name} does not match PyTorch: max map diff {report.max_map_diff:.3g} "
                f"(allowed {report.map_tolerance:.3g}), max score diff {report.max_score_diff:.3g} "
                f"(allowed {report.score_tolerance:.3g}); the run fails"
            )
        props["parity"] = json.dumps(report.to_dict(), sort_keys=True)
        set_metadata(tmp, props)  # one rewrite of the file for all of its metadata
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes and initializers nothing reads any more (the graph's outputs are read)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(out in read for out in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def write_thresholds(path: str | Path, thresholds: Any, meta: dict[str, str] | None = None) -> dict[str, float]:
    """Put ``thresholds`` (image, pixel, score_min, score_max) into an adkd graph: its constants and metadata.

    The graph's ``normalized_score = clip((image_score - threshold) / range + 0.5)`` reads two constants; they
    are rewritten in place, so the file scores with thresholds fitted on its own outputs. ``meta``: more
    metadata written in the same save. Returns the thresholds.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    fitted = _thresholds_dict(thresholds)
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    sub = next(
        (n for n in model.graph.node if n.op_type == "Sub" and list(n.input) == ["image_score", "threshold"]), None
    )
    div = next(
        (n for n in model.graph.node if sub is not None and n.op_type == "Div" and n.input[0] == sub.output[0]), None
    )
    if sub is None or div is None or "threshold" not in inits:
        raise ExportError(f"{path}: cannot find the score normalisation (threshold, range) to refit; re-export it")
    span = max(fitted["score_max"] - fitted["score_min"], MIN_RANGE)
    dtype = numpy_helper.to_array(inits["threshold"]).dtype
    if div.input[1] not in inits:  # the exporter left the range's clamp in the graph: a constant takes its place
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(span, dtype=dtype), "score_range"))
        div.input[1] = "score_range"
        _drop_dead_nodes(model.graph)
        inits = {i.name: i for i in model.graph.initializer}
    for name, value in (("threshold", fitted["image"]), (div.input[1], span)):
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    update_props(model, {**(meta or {}), "thresholds": json.dumps(fitted, sort_keys=True)})
    save_replacing(model, path)
    return fitted
