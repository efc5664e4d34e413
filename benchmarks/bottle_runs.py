"""The training configuration the speed and int8 benchmarks share: real MVTec AD data from ../shared, batch 8.

MobileNetV2 uses the ImageNet teacher in ../shared/weights, other backbones random weights; stfpm trains with
SGD lr 0.4 (its presets' optimiser). No data validation: the benchmarks time training, not the gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.pipelines.train.config import TrainConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
MVTEC = SHARED / "data" / "mvtec_ad_256"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
STFPM_SGD = {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4}


def bottle_config(
    model: str,
    backbone: str,
    epochs: int,
    out_dir: Path | str,
    *,
    data: Path | str = MVTEC,
    category: str = "bottle",
    size: int = 256,
    threads: int = 2,
    **values: Any,
) -> TrainConfig:
    weights = str(MOBILENET_WEIGHTS) if backbone == "mobilenet_v2" else "none"
    return TrainConfig(
        **{
            "category": category,
            "data": str(data),
            "model": model,
            "backbone": backbone,
            "weights": weights,
            "image_size": size,
            "batch_size": 8,
            "epochs": epochs,
            "num_threads": threads,
            "out_dir": str(out_dir),
            "skip_validation": True,
            **({"optimizer": STFPM_SGD} if model == "stfpm" else {}),
            **values,
        }
    )


def score_and_time(
    files: dict[str, Path], data: Any, size: int, threads: int, repeats: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Each runtime variant's test-split metrics (scored through ``open_predictor``, as ``adkd predict`` scores)
    and its ms/image at batch 1 and 8 (``runtime_choice.time_variants``: the models alternating over 3 rounds).
    """
    from adkd.pipelines.evaluate.report import score_test_split, test_metrics
    from adkd.pipelines.export.runtime_choice import time_variants
    from adkd.pipelines.predict import open_predictor

    scores = {}
    for variant, path in files.items():
        maps, image_scores, valid = score_test_split(open_predictor(path, variant), data, size, "stretch", size)
        scores[variant] = test_metrics(maps, image_scores, data, valid)
    return scores, time_variants(files, threads, repeats=repeats, rounds=3)
