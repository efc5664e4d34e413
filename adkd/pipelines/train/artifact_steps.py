"""The steps that make and measure a run's exported files: export, fit thresholds on the file's own scores,
score the test split through it, quantize it (used by ``outputs`` at the end of a run, by ``artifacts`` for a
saved checkpoint and by ``runtime_variants`` for the other runtimes' files).

Every score here comes from the predictor ``adkd predict`` uses (``adkd.pipelines.predict.open_predictor``),
each file on its own runtime: the fp32 file on ONNX Runtime (``FP32_RUNTIME``, the reference), an int8 file
as what it was made for.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.pipelines.evaluate.report import score_test_split, test_metrics
from adkd.pipelines.evaluate.thresholds import Thresholds
from adkd.pipelines.inference.artifact import nhwc
from adkd.pipelines.inference.validity import valid_masks
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.tiled import export_tiled_model, mask_geometry

FP32_RUNTIME = "onnxruntime"  # the fp32 file on its own runtime: the reference every other variant is held to
MODEL_FILE = "model.pt"  # the checkpoint the exported file comes from (adkd.pipelines.train.checkpoint.MODEL)


@dataclass
class Int8Outcome:
    """What a run keeps about its int8 model (a refused one keeps only the reason, as a tag)."""

    path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gate: Any = None
    test_metrics: dict[str, float] = field(default_factory=dict)  # the int8 file's own, without prefix
    reference: Any = None  # the fp32 file's gate scores (int8_gate.GateScores): another int8 model reuses them


def artifact_view(data: Any, config: TrainConfig) -> Any:
    """The category as the exported graph takes it: at ``image_size``, uncropped (the graph crops inside)."""
    if config.crop_size is None:
        return data
    from adkd.pipelines.data.dataset import load_category, local_root

    return load_category(
        local_root(config.data), config.category, image_size=config.image_size, crop_size=None,
        val_fraction=config.val_fraction, seed=config.seed, resize=config.resize,
        image_level=config.data_gate.image_level,
    )  # fmt: skip


def fit_split(data: Any, config: TrainConfig, notes: list[str] | None = None) -> tuple[torch.Tensor, list, str]:
    """(images, paths, source) the thresholds are fitted on: the validation split, else the training images."""
    if len(data.val):
        return data.val, list(data.val_paths), "validation"
    # Every train/good image was trained on (the paper presets): thresholds come from those same images,
    # never from the test split; they sit low because the model has seen them.
    if notes is not None:
        notes.append(
            f"val_fraction=0: thresholds fitted on the {len(data.train)} training images at quantile "
            f"{config.threshold_quantile} (optimistic: the model was trained on them; never the test split)"
        )
    return data.train, list(data.train_paths), "train"


def validity(paths: Sequence[Any], config: TrainConfig, crop: int | None) -> torch.Tensor | None:
    """Validity masks of the images at ``paths`` as the run places them (None: no padding anywhere)."""
    size, resize, crop = mask_geometry(config, crop)  # tiled: the whole image's, never a tile's
    return valid_masks(paths, size, resize, crop=crop)


def export_model(
    model: nn.Module, config: TrainConfig, out_path: Path, thresholds: Thresholds | dict, full: Any
) -> Path:
    """``model`` (a CPU copy, fp32) as ONNX at ``out_path``, verified against PyTorch on a few real images."""
    from adkd.pipelines.export.onnx_export import export_onnx

    if config.tiling.enabled:  # the tile graph, its tiling in the metadata (adkd.pipelines.export.tiled)
        return export_tiled_model(model, config, out_path, thresholds, full)

    cpu = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()
    return export_onnx(
        cpu,
        out_path,
        image_size=config.image_size,
        thresholds=thresholds,
        meta={
            "model": config.model,
            "backbone": config.backbone,
            "category": config.category,
            "resize": config.resize,  # predictors place inputs and map results back the same way
            "image_level": not full.has_masks,
            "checkpoint": MODEL_FILE,
        },
        eval_size=config.eval_size,
        **_verify_images(full, config),
    )


def _verify_images(full: Any, config: TrainConfig, n: int = 4) -> dict[str, Any]:
    """Up to ``n`` test images (normal and defective; else validation images) for the parity check."""
    labels = full.test_labels.tolist()
    normal = [i for i, y in enumerate(labels) if y == 0]
    defect = [i for i, y in enumerate(labels) if y != 0]
    picks = normal[: n // 2] + defect[: n - n // 2]
    if picks:
        images, what = full.test[picks], "test"
    elif len(full.val):
        images, what = full.val[:n], "validation"
    else:
        return {}
    return {
        "verify_images": torch.from_numpy(nhwc(images)),
        "verify_source": f"{what} images of {config.data}/{config.category}",
    }


def fit_on_artifact(path: Path, full: Any, config: TrainConfig) -> tuple[Thresholds, list[float], dict[str, Any]]:
    """Thresholds fitted on ``path``'s own scores of the held-out normals and written into it; (thresholds, those
    scores, how they were fitted)."""
    from adkd.pipelines.export.quantize import fit_artifact_thresholds

    images, paths, source = fit_split(full, config)
    valid = validity(paths, config, config.eval_size)
    fitted, scores = fit_artifact_thresholds(
        path, images, config.threshold_quantile, valid, FP32_RUNTIME, config.num_threads
    )
    info = {"source": source, "images": len(images), "quantile": config.threshold_quantile,
            "scored_by": f"{path.name} ({FP32_RUNTIME})"}  # fmt: skip
    return Thresholds.from_dict(fitted), [float(s) for s in scores.tolist()], info


def score_test(path: Path, full: Any, config: TrainConfig, runtime: str = FP32_RUNTIME) -> tuple[Any, ...]:
    """(maps, scores, validity, metrics without prefix, ms per image) of the test split through ``path``."""
    from adkd.pipelines.predict import open_predictor

    predictor = open_predictor(path, runtime=runtime, threads=config.num_threads)
    t0 = time.perf_counter()
    size, resize, crop = mask_geometry(config, config.eval_size)
    maps, scores, valid = score_test_split(predictor, full, size, resize, crop or size, config.eval_batch_size)
    ms = 1000.0 * (time.perf_counter() - t0) / max(len(scores), 1)
    return maps, scores, valid, test_metrics(maps, scores, full, valid), ms


def gate_options(full: Any, config: TrainConfig) -> dict[str, Any]:
    """How a run's validation images gate a variant of its fp32 file (``quantize.gate_reference``'s and
    ``quantize.gated_int8``'s keyword arguments): the same split, quantile and source for every variant."""
    return {
        "valid": validity(full.val_paths, config, None),
        "seed": config.seed,
        "threshold_quantile": config.threshold_quantile,
        "source": f"validation images of {config.data}/{config.category}",
        "threads": config.num_threads,
    }


def gated_variant(
    quantize: Callable[..., tuple[Path, Any]],
    refused: type[Exception],
    prefix: str,
    onnx_path: Path,
    full: Any,
    config: TrainConfig,
    *,
    test: bool = True,
    reference: Any = None,
    **options: Any,
) -> Int8Outcome:
    """An int8 model of the run's fp32 file by ``quantize`` (``quantize_onnx``, ``quantize_openvino``), calibrated
    and gated on the run's validation images (split in two); ``refused``: its refusal.

    Metrics: ``<prefix>/...`` (the gate) and, with ``test``, ``test_<prefix>/...`` (the int8 file's own test
    metrics at its own thresholds, also written into its metadata); tags ``<prefix>`` and ``<prefix>_refused``.
    ``reference``: the fp32 file's gate scores from another int8 model's outcome (else scored here and kept in
    this one). ``options`` go to ``quantize``.
    """
    from adkd.pipelines.export.onnx_export import set_metadata
    from adkd.pipelines.export.quantize import gate_reference

    images = nhwc(full.val)
    common = gate_options(full, config)
    reference = reference or gate_reference(onnx_path, images, **common)
    try:
        path, gate = quantize(onnx_path, images, reference=reference, **common, **options)
    except refused as exc:
        return Int8Outcome(tags={prefix: "refused", f"{prefix}_refused": str(exc)}, reference=reference)
    outcome = Int8Outcome(path, gate.metrics(prefix), {prefix: "logged"}, gate, reference=reference)
    if test and len(full.test):
        *_, own, ms = score_test(path, full, config, runtime="auto")  # an int8 file runs as what it was made for
        outcome.test_metrics = own
        outcome.metrics.update({f"test_{prefix}/{k}": v for k, v in own.items()})
        outcome.metrics[f"test_{prefix}/ms_per_image"] = ms
        set_metadata(path, {"metrics": json.dumps({f"test/{k}": v for k, v in own.items()}, sort_keys=True)})
    return outcome


def int8_for_run(onnx_path: Path, full: Any, config: TrainConfig, *, test: bool = True, **options: Any) -> Int8Outcome:
    """ONNX Runtime's int8 of the run's fp32 file (``gated_variant``, metrics ``int8/...`` and ``test_int8/...``).

    ``options`` go to ``quantize_onnx`` (``scheme``: the run's ``int8_scheme`` by default).
    """
    from adkd.pipelines.export.quantize import QuantizationRefused, quantize_onnx

    options.setdefault("scheme", config.int8_scheme)
    return gated_variant(quantize_onnx, QuantizationRefused, "int8", onnx_path, full, config, test=test, **options)


def run_data(config: TrainConfig) -> Any | None:
    """The run's category at its input size, uncropped (what the exported graph takes); None when not here."""
    from adkd.pipelines.data.dataset import load_category

    root = Path(str(config.data)).expanduser()
    if not (root / config.category).is_dir():
        return None
    return load_category(
        root, config.category, config.data_size, crop_size=None, val_fraction=config.val_fraction,
        seed=config.seed, resize=config.resize, image_level=config.data_gate.image_level,
    )  # fmt: skip
