"""What a finished run writes besides its checkpoint: thresholds, summary metrics and the exported models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from adkd.pipelines.evaluate.thresholds import Thresholds, fit_thresholds
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult, emit
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.loop_state import LoopState
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import predict


def fit_run_thresholds(
    model: nn.Module,
    val_images: torch.Tensor,
    train_images: torch.Tensor,
    rt: Runtime,
    config: TrainConfig,
    run_dir: Path,
    notes: list[str],
) -> tuple[Thresholds, str]:
    """Thresholds on held-out normal images (never the test split), written to thresholds.json; (thresholds, source)."""
    if len(val_images):
        fit_images, source = val_images, "validation"
    else:
        # Every train/good image was trained on (the paper presets): thresholds come from those same
        # images, never from the test split; they sit low because the model has seen them.
        fit_images, source = train_images, "train"
        notes.append(
            f"val_fraction=0: thresholds fitted on the {len(fit_images)} training images at quantile "
            f"{config.threshold_quantile} (optimistic: the model was trained on them; never the test split)"
        )
    fit_maps, fit_scores = predict(model, fit_images, rt, config.eval_batch_size)
    thresholds = fit_thresholds(fit_scores, fit_maps, config.threshold_quantile)
    info = {"source": source, "images": len(fit_images), "quantile": config.threshold_quantile}
    (run_dir / "thresholds.json").write_text(json.dumps({**thresholds.to_dict(), **info}, indent=2) + "\n")
    return thresholds, source


def summary_metrics(state: LoopState, train_s: float, images_seen: int) -> dict[str, float]:
    """Training time, throughput, best validation loss and the last training loss."""
    extra = {"time/train_s": train_s}
    if train_s > 0 and images_seen:
        extra["train/images_per_s"] = images_seen / train_s
    if state.best_val_loss is not None:
        extra["val/best_loss"] = state.best_val_loss
    last_train = [h["train/loss"] for h in state.history if "train/loss" in h]
    if last_train:
        extra["train/final_loss"] = last_train[-1]
    return extra


def export_models(
    checkpoint: Path, config: TrainConfig, result: TrainResult, callbacks: Sequence[TrainCallback]
) -> None:
    """``model.onnx`` beside ``checkpoint``, and the gated int8 model when ``export_int8`` is on; into ``result``."""
    from adkd.pipelines.export.run_models import int8_for_run, onnx_for_run

    result.onnx_path = onnx_for_run(checkpoint)
    emit(callbacks, "on_artifact", result.onnx_path, "onnx")
    if not config.export_int8:
        return
    outcome = int8_for_run(checkpoint, result.onnx_path)
    result.int8_path = outcome.path
    result.tags.update(outcome.tags)
    result.metrics.update(outcome.metrics)
    if outcome.path is not None:
        emit(callbacks, "on_artifact", outcome.path, "onnx_int8")
