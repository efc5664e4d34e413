"""Test metrics of an exported model on a data root, measured the way ``adkd predict`` sees the images.

``metrics_on_data`` decodes every test image of a category with the predictor's own ``load`` (the model's
``resize`` policy), scores them through the predictor (``open_predictor``: the runtime ``adkd predict``,
``adkd.load`` and the served pyfunc use) and computes the test metrics from its maps and scores. Two models
scored here on one data root are compared on the same images by the same code, whatever each was
evaluated on when it was trained: promotion re-scores through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adkd.errors import DataError
from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.pipelines.data.images import read_mask
from adkd.pipelines.data.mvtec import is_image_level, list_items
from adkd.pipelines.evaluate.metrics import compute_metrics
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


def metrics_on_data(
    onnx_path: str | Path, root: str | Path, category: str, runtime: str = "auto", batch_size: int = 16
) -> DataMetrics:
    """Score the test split of ``root/category`` through the model at ``onnx_path``; the metrics as fractions."""
    root = Path(root)
    items = [item for item in list_items(root, category) if item.split == "test"]
    if not items:
        raise DataError(f"{root / category / 'test'} holds no images: nothing to score the model on")
    labels = np.array([item.label for item in items], dtype=np.int64)
    if labels.min() == labels.max():
        raise DataError(
            f"the test split of {root / category} holds only {'defective' if labels[0] else 'good'} images; "
            "scoring needs both"
        )
    predictor = open_predictor(onnx_path, runtime)
    size, resize, crop = predictor.image_size, predictor.resize, predictor.crop
    images = np.stack([predictor.load(item.image_path).model_input for item in items])
    paths = [item.image_path for item in items]
    valid = valid_masks(paths, size, resize, crop)
    maps, scores = score_artifact(predictor, images, valid, batch_size=batch_size)
    masks = None
    if not is_image_level(root / category):
        side = maps.shape[-1]
        masks = np.zeros((len(items), side, side), dtype=np.uint8)
        for i, item in enumerate(items):
            if item.label == 1:
                if item.mask_path is None:
                    raise DataError(
                        f"defective test image {item.image_path} has no mask: add "
                        f"{category}/ground_truth/{item.defect}/{item.image_path.stem}_mask.png"
                    )
                masks[i] = read_mask(item.mask_path, size, crop, resize)
    metrics = compute_metrics(maps.numpy(), scores.numpy(), masks, labels, valid=valid)
    return DataMetrics(
        metrics=metrics,
        root=str(root),
        category=category,
        fingerprint=data_fingerprint(root, category),
        images=len(items),
        anomalous=int(labels.sum()),
    )
