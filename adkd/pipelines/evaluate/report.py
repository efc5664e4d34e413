"""Test-split reporting: metrics of scored maps, and metrics.json, scores.csv and the plots of an evaluation.

``adkd evaluate`` (``artifact_metrics.evaluate_artifact``) scores the test split through an exported model's
predictor (the code ``adkd predict`` runs), so any host gives the numbers the model was registered with.
Agreement: on one host the metrics equal those of the training run that exported the file (same graph, same
runtime); across hosts and runtimes the scores agree to ``SCORE_TOLERANCE`` (relative) and AUROC/AUPRO/F1 to
``METRIC_TOLERANCE`` (absolute).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from adkd.pipelines.evaluate.metrics import compute_metrics
from adkd.pipelines.evaluate.thresholds import Thresholds, normalize_scores

if TYPE_CHECKING:
    from adkd.pipelines.data.dataset import CategoryData

SCORE_TOLERANCE = 1e-4  # relative: ONNX Runtime's fp32 kernels differ by CPU instruction set at about 1e-6
METRIC_TOLERANCE = 1e-3  # absolute, on fractions: a score change that small can swap two tied ranks


def crop_center(t: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size`` square of [N,C,H,W] (a model that scores a crop of its input)."""
    if size == t.shape[-1]:
        return t
    o = (t.shape[-1] - size) // 2
    return t[..., o : o + size, o : o + size]


def test_metrics(
    maps: torch.Tensor, scores: torch.Tensor, data: CategoryData, valid: torch.Tensor | None = None
) -> dict[str, float]:
    """Image AUROC, F1-max and (with masks) pixel AUROC and AUPRO of the test split, as fractions.

    ``maps`` may be a centred crop of the images (a model trained on crops); the masks are cropped alike.
    An image-level category has no pixel metrics (absent, never NaN).
    """
    masks = crop_center(data.test_masks, maps.shape[-1]) if data.has_masks else None
    return {k: float(v) for k, v in compute_metrics(maps, scores, masks, data.test_labels, valid=valid).items()}


test_metrics.__test__ = False  # type: ignore[attr-defined]  # a library function, not a test pytest should collect


def write_json(path: Path, values: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_report(
    out_dir: Path,
    data: CategoryData,
    maps: torch.Tensor,
    scores: torch.Tensor,
    thresholds: Thresholds,
    valid: torch.Tensor | None = None,
) -> list[tuple[Path, str]]:
    """scores.csv and the ROC/PRO curves and overlays of a scored test split; (path, kind) of each file."""
    from adkd.pipelines.evaluate import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "scores.csv"
    _write_scores_csv(path, data, scores, thresholds)
    written = [(path, "scores")]
    size = maps.shape[-1]
    paths = plots.write_evaluation_plots(
        crop_center(data.test, size),
        maps,
        scores,
        crop_center(data.test_masks, size) if data.has_masks else None,
        data.test_labels,
        out_dir,
        pixel_threshold=thresholds.pixel,
        image_threshold=thresholds.image,
        names=[Path(p).name for p in data.test_paths],
        valid=valid,
    )
    return written + [(p, "overlay" if "overlay" in p.name else "curve") for p in paths]


def _write_scores_csv(path: Path, data: CategoryData, scores: torch.Tensor, thresholds: Thresholds) -> None:
    norm = normalize_scores(scores, thresholds)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "defect", "label", "score", "normalized_score", "predicted_label"])
        for i in range(len(scores)):
            writer.writerow(
                [
                    str(data.test_paths[i]),
                    data.test_defects[i],
                    int(data.test_labels[i]),
                    repr(float(scores[i])),  # the artifact's float32 score, exactly
                    f"{float(norm[i]):.6f}",
                    int(float(scores[i]) > thresholds.image),  # the rule of adkd predict and the pyfunc
                ]
            )
    os.replace(tmp, path)


def score_test_split(
    predictor: object, data: CategoryData, image_size: int, resize: str, eval_size: int, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(maps, scores, validity masks) of ``data.test`` (uint8 at the model's input size) through ``predictor``."""
    from adkd.pipelines.inference.artifact import score_artifact
    from adkd.pipelines.inference.validity import valid_masks

    valid = valid_masks(data.test_paths, image_size, resize, crop=eval_size)
    maps, scores = score_artifact(predictor, data.test, valid, batch_size)  # type: ignore[arg-type]
    return maps, scores, valid
