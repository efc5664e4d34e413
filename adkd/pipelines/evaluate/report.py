"""Test-split reporting: score a model, write metrics.json, scores.csv and the plots; re-evaluate a checkpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.train import checkpoint as ckpt
from adkd.pipelines.train.callbacks import TrainCallback, emit
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import predict

if TYPE_CHECKING:
    from adkd.pipelines.data.dataset import CategoryData
    from adkd.pipelines.evaluate.thresholds import Thresholds


def evaluate_model(
    model: nn.Module,
    data: CategoryData,
    thresholds: Thresholds,
    config: TrainConfig,
    out_dir: Path,
    callbacks: Sequence[TrainCallback] = (),
    runtime: Runtime | None = None,
    extra_metrics: dict[str, float] | None = None,
) -> dict[str, float]:
    """Score the test split; write metrics.json, scores.csv and the plots; return the metrics."""
    from adkd.pipelines.evaluate.metrics import compute_metrics
    from adkd.pipelines.evaluate.thresholds import normalize_scores

    rt = runtime or Runtime.from_config(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    maps, scores = predict(model, data.test, rt, config.eval_batch_size)
    infer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = data.test_masks if data.has_masks else None  # None: image-level, no pixel metrics
    raw = compute_metrics(maps, scores, masks, data.test_labels)
    metric_s = time.perf_counter() - t0
    metrics = {f"test/{k}": float(v) for k, v in raw.items()}
    if len(scores):
        metrics["test/ms_per_image"] = 1000.0 * infer_s / len(scores)
    metrics["time/metrics_s"] = metric_s
    metrics.update(extra_metrics or {})

    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    emit(callbacks, "on_artifact", path, "metrics")

    norm = normalize_scores(scores, thresholds)
    path = out_dir / "scores.csv"
    _write_scores_csv(path, data, scores, norm, thresholds)
    emit(callbacks, "on_artifact", path, "scores")

    for plot_path, kind in _plots(data, maps, scores, thresholds, out_dir):
        emit(callbacks, "on_artifact", plot_path, kind)
    return metrics


def _write_scores_csv(
    path: Path, data: CategoryData, scores: torch.Tensor, norm: torch.Tensor, thresholds: Thresholds
) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "defect", "label", "score", "normalized_score", "predicted_label"])
        for i in range(len(scores)):
            writer.writerow(
                [
                    str(data.test_paths[i]),
                    data.test_defects[i],
                    int(data.test_labels[i]),
                    f"{float(scores[i]):.6g}",
                    f"{float(norm[i]):.6f}",
                    int(float(scores[i]) > thresholds.image),
                ]
            )


def _plots(
    data: CategoryData, maps: torch.Tensor, scores: torch.Tensor, thresholds: Thresholds, out_dir: Path
) -> list[tuple[Path, str]]:
    """ROC/PRO curves and overlays of the worst and best test images, via evaluate.plots."""
    from adkd.pipelines.evaluate import plots

    paths = plots.write_evaluation_plots(
        data.test,
        maps,
        scores,
        data.test_masks if data.has_masks else None,
        data.test_labels,
        out_dir,
        pixel_threshold=thresholds.pixel,
        image_threshold=thresholds.image,
        names=[Path(p).name for p in data.test_paths],
    )
    return [(p, "overlay" if "overlay" in p.name else "curve") for p in paths]


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    category: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    callbacks: Sequence[TrainCallback] = (),
) -> dict[str, float]:
    """Re-evaluate a saved model on a data root with the thresholds stored in it."""
    from adkd.pipelines.data.dataset import load_category, local_root
    from adkd.pipelines.evaluate.thresholds import Thresholds

    model, config, meta = ckpt.load_model_from_checkpoint(checkpoint)
    category = category or config.category
    config = config.model_copy(update={"device": device, "category": category, "data": data})
    root = local_root(data)
    loaded = load_category(
        root, category, image_size=config.image_size, crop_size=config.crop_size,
        val_fraction=config.val_fraction, seed=config.seed, resize=config.resize,
        image_level=config.data_gate.image_level,
    )  # fmt: skip
    if not meta.get("thresholds"):
        raise ConfigError(f"checkpoint {checkpoint} has no thresholds; use the model.pt written after training")
    thresholds = Thresholds.from_dict(meta["thresholds"])
    rt = Runtime.from_config(config)
    model = rt.place(model)
    target = Path(out_dir) if out_dir else Path(checkpoint).parent / f"evaluate-{category}"
    return evaluate_model(model, loaded, thresholds, config, target, callbacks, rt)
