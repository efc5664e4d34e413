"""Test metrics of an exported model on a data root, measured the way ``adkd predict`` sees the images.

``score_on_data`` decodes every test image of a category with the predictor's own ``load`` (the model's
``resize`` policy; a tiled model's trained square, trained size or each image's own size), scores them through
the predictor (``open_predictor``: the runtime ``adkd predict``, ``adkd.load`` and the served pyfunc use) and
computes the test metrics from its maps and scores. ``adkd evaluate`` (``evaluate_artifact``) and promotion's
re-scoring (``metrics_on_data``) both measure through it, so two models scored on one data root are compared on
the same images by the same code, whatever each was evaluated on when it was trained.

Agreement: on one host the metrics equal those of the training run that exported the file (same graph, same
runtime); across hosts and runtimes the scores agree to ``SCORE_TOLERANCE`` and the metrics to
``METRIC_TOLERANCE`` (``adkd.pipelines.evaluate.report``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.dataset import CategoryData
from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.pipelines.data.images import read_mask
from adkd.pipelines.data.mvtec import is_image_level, list_items
from adkd.pipelines.evaluate.report import test_metrics, write_json, write_report
from adkd.pipelines.evaluate.thresholds import Thresholds
from adkd.pipelines.inference.artifact import score_artifact
from adkd.pipelines.inference.validity import valid_masks
from adkd.pipelines.predict import open_predictor


@dataclass(frozen=True)
class DataMetrics:
    """A model's test metrics on one category of a data root, and which data that was."""

    metrics: dict[str, float]
    root: str
    category: str
    fingerprint: str  # adkd's content fingerprint of the category's files
    images: int
    anomalous: int


@dataclass(frozen=True)
class ScoredSplit:
    """A category's test split as a predictor took it, its maps, scores and validity masks, and the metrics."""

    data: CategoryData
    maps: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor | None
    metrics: dict[str, float]  # without prefix, as fractions


def load_test_split(predictor: Any, root: Path, category: str, image_level: bool = False) -> CategoryData:
    """The test split of ``root/category`` as ``predictor`` takes it: each image through ``predictor.load``, each
    mask placed alike (nearest) at the model input's size. ``image_level``: no masks even where the data has them.
    """
    items = [item for item in list_items(root, category, image_level) if item.split == "test"]
    if not items:
        raise DataError(f"{root / category / 'test'} holds no images: nothing to score the model on")
    labels = np.array([item.label for item in items], dtype=np.int64)
    if labels.min() == labels.max():
        raise DataError(
            f"the test split of {root / category} holds only {'defective' if labels[0] else 'good'} images; "
            "scoring needs both"
        )
    loaded = [predictor.load(item.image_path) for item in items]
    shapes = sorted({item.model_input.shape[:2] for item in loaded})
    if len(shapes) > 1:  # a tiled model at the images' own size: metrics need one size
        raise DataError(
            f"the test images of {root / category} have {len(shapes)} sizes ({', '.join(f'{w}x{h}' for h, w in shapes)}"
            "); the model scores each at its own size, so they must share one to be evaluated together"
        )
    (h, w), has_masks = shapes[0], not is_image_level(root / category, image_level)
    masks = np.zeros((len(items), 1, h, w), dtype=np.uint8)
    for i, item in enumerate(items):
        if has_masks and item.label == 1:
            if item.mask_path is None:
                raise DataError(
                    f"defective test image {item.image_path} has no mask: add "
                    f"{category}/ground_truth/{item.defect}/{item.image_path.stem}_mask.png"
                )
            mask = read_mask(item.mask_path, predictor.image_size, None, predictor.resize)
            if mask.shape != (h, w):  # per position: the image was stretched to the trained size
                mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
            masks[i, 0] = mask
    images = torch.from_numpy(np.stack([item.model_input for item in loaded])).permute(0, 3, 1, 2)
    none = torch.zeros((0, 3, h, w), dtype=torch.uint8)
    return CategoryData(
        category=category, train=none, val=none, test=images, test_masks=torch.from_numpy(masks),
        test_labels=torch.from_numpy(labels), test_defects=[item.defect for item in items],
        test_paths=[item.image_path for item in items], train_paths=[], val_paths=[], has_masks=has_masks,
    )  # fmt: skip


def score_on_data(
    predictor: Any, root: str | Path, category: str, image_level: bool = False, batch_size: int = 32
) -> ScoredSplit:
    """Score the test split of ``root/category`` through ``predictor`` (``load_test_split``); the metrics as fractions.

    Letterbox padding is no evidence: scores are the max over each image's area, pixel metrics leave it out.
    """
    data = load_test_split(predictor, Path(root), category, image_level)
    # A tiled model at the images' own (or per-position) size pads nothing: no validity masks.
    square = predictor.image_size
    valid = valid_masks(data.test_paths, square, predictor.resize, predictor.crop) if square is not None else None
    maps, scores = score_artifact(predictor, data.test, valid, batch_size)
    return ScoredSplit(data, maps, scores, valid, test_metrics(maps, scores, data, valid))


def metrics_on_data(
    onnx_path: str | Path, root: str | Path, category: str, runtime: str = "auto", batch_size: int = 16
) -> DataMetrics:
    """Score the test split of ``root/category`` through the model at ``onnx_path``; the metrics as fractions."""
    scored = score_on_data(open_predictor(onnx_path, runtime), root, category, batch_size=batch_size)
    return DataMetrics(
        metrics=scored.metrics,
        root=str(root),
        category=category,
        fingerprint=data_fingerprint(root, category),
        images=len(scored.scores),
        anomalous=int(scored.data.test_labels.sum()),
    )


def evaluate_artifact(
    model_path: str | Path,
    data: str | Path,
    category: str | None = None,
    out_dir: str | Path | None = None,
    runtime: str = "auto",
    image_level: bool | None = None,
) -> dict[str, float]:
    """``adkd evaluate``: score a data root's test split through an exported model and its stored thresholds.

    Writes metrics.json, scores.csv and the plots to ``out_dir`` (default: ``evaluate-<category>`` beside
    the model) and returns the metrics (``test/...``). The model's metadata gives its input geometry (the
    predictor's) and whether it was trained image-level (``image_level`` overrides that).
    """
    from adkd.pipelines.data.dataset import local_root

    model_path = Path(model_path)
    predictor = open_predictor(model_path, runtime=runtime)
    meta = predictor.meta
    category = category or meta.get("category")
    if not category:
        raise ConfigError(f"{model_path} names no category in its metadata; pass --category")
    if not meta.get("thresholds"):
        raise ConfigError(f"{model_path} has no thresholds in its metadata; re-export it with `adkd export`")
    thresholds = Thresholds.from_dict(meta["thresholds"])
    level = bool(meta.get("image_level", False)) if image_level is None else image_level
    scored = score_on_data(predictor, local_root(str(data)), category, level)
    metrics = {f"test/{k}": v for k, v in scored.metrics.items()}
    target = Path(out_dir) if out_dir else model_path.parent / f"evaluate-{category}"
    write_report(target, scored.data, scored.maps, scored.scores, thresholds, scored.valid)
    write_json(target / "metrics.json", metrics)
    return metrics
