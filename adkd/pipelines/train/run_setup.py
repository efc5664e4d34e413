"""What a run settles before its first step: its folder, the data gate on its category, its checkpoint's meta.

Shared by ``engine.train_category`` and ``positions.train_per_position`` (which assembles a per-position
model from position runs and writes a checkpoint of its own).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adkd.pipelines.train.callbacks import TrainCallback, emit
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.tiled import tiling_meta


def run_dir_for(config: TrainConfig) -> Path:
    """Where a run writes: ``<out_dir>/<model>/<category>`` (stable, so --resume finds it)."""
    return Path(config.out_dir) / config.run_dir_name()


def data_gate(
    config: TrainConfig, root: Path, run_dir: Path, callbacks: Sequence[TrainCallback], notes: list[str]
) -> str:
    """The training data gate on the run's category: "passed" (``data_validation.json`` written and announced),
    or "skipped" with a note under ``skip_validation``; a failing gate raises DataError."""
    if config.skip_validation:
        notes.append("data validation skipped (skip_validation=true)")
        return "skipped"
    from adkd.pipelines.data.validate import require_valid

    # No GX Data Docs site here (~4 MB and seconds of rendering per run); the GX result JSON, fact tables
    # and report.html are kept. `adkd data validate --out DIR` renders the full Data Docs.
    report = require_valid(
        root,
        categories=[config.category],
        out_dir=run_dir / "data_validation",
        data_docs=False,
        **config.data_gate.validate_kwargs(),
    )
    path = run_dir / "data_validation.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    emit(callbacks, "on_artifact", path, "data_validation")
    return "passed"


def run_meta(config: TrainConfig, train_images: torch.Tensor, **extra: Any) -> dict[str, Any]:
    """A checkpoint's ``meta``: the run's names and sizes, its tiling (from the training images' size), ``extra``."""
    meta = {
        "category": config.category,
        "model": config.model,
        "backbone": config.backbone,
        "image_size": config.image_size,
        "crop_size": config.crop_size,
        "eval_size": config.eval_size,
        "resize": config.resize,
        **tiling_meta(config, train_images),
    }
    meta.update(extra)
    return meta
