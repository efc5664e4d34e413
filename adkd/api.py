"""The Python API: ``adkd.train(...)`` and ``adkd.load(model_uri).predict(images)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.pipelines.predict import OnnxPredictor, Prediction, open_predictor
from adkd.pipelines.train.callbacks import TrainResult


class Detector:
    """A loaded adkd model. ``predict`` takes numpy arrays, PIL images or paths."""

    def __init__(self, predictor: OnnxPredictor, origin: dict[str, str]):
        self.predictor = predictor
        self.origin = origin

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.predictor.meta)

    @property
    def runtime(self) -> str:
        """The runtime variant that scores the images (``onnxruntime``, ``openvino``, ``openvino-int8``, ...)."""
        return self.predictor.runtime

    @property
    def runtime_reason(self) -> str:
        """Why that variant runs (asked for, or what ``auto`` found)."""
        return self.predictor.runtime_reason

    def predict(self, images: Any) -> list[Prediction]:
        """One Prediction per image (a single image is accepted too)."""
        if not isinstance(images, list | tuple):
            images = [images]
        return self.predictor.predict(list(images))


def load(
    model_uri: str | Path,
    threshold: float | None = None,
    tracking_uri: str | None = None,
    int8: bool = False,
    runtime: str = "auto",
) -> Detector:
    """Load a model from an .onnx path, ``models:/adkd-CAT@alias``, ``models:/adkd-CAT/N`` or a run id.

    ``int8=True`` picks the model's int8 ONNX file (``adkd export --int8`` / ``export_int8=true``).
    ``runtime`` picks what runs it: ``auto`` (the variant ``adkd export`` timed fastest), ``onnxruntime``,
    ``openvino``, ``openvino-bf16``, ``onnxruntime-int8`` or ``openvino-int8``.
    """
    from adkd.platform.registry.resolve import resolve_onnx
    from adkd.settings import load_settings

    settings = load_settings(tracking_uri=tracking_uri)
    path, origin = resolve_onnx(str(model_uri), settings.resolved_tracking_uri, settings.cache_dir, int8=int8)
    return Detector(open_predictor(path, runtime=runtime, threshold=threshold, cache_dir=settings.cache_dir), origin)


def train(
    category: str,
    data: str | Path,
    model: str,
    preset: str | None = "paper",
    overrides: list[str] | None = None,
    *,
    config_file: str | Path | None = None,
    out: str | Path | None = None,
    tracking: bool = True,
) -> TrainResult:
    """Train one category in this process, as ``adkd train -c CATEGORY`` does (same settings, same tracking).

    ``overrides`` are ``key=value`` strings like ``--set``; ``tracking=False`` writes no MLflow run. A failed
    training comes back as a result with ``status == "FAILED"``; bad settings or data raise ``AdkdError``.
    """
    from adkd.platform.runs import RunRequest, train_one

    request = RunRequest(
        model=model,
        data=str(data),
        category=category,
        preset=preset,
        overrides=list(overrides or []),
        config_file=Path(config_file) if config_file is not None else None,
        out=Path(out) if out is not None else None,
        tracking=tracking,
    )
    return train_one(request)
