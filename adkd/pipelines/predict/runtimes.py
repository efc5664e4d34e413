"""Pick the runtime that scores an exported adkd model: one entry, ``open_predictor``, for every caller.

Every predictor has the same public face as ``OnnxPredictor``: ``load``, ``run`` (uint8 NHWC batch in; maps,
scores and normalised scores out), ``predict``, ``predict_loaded``, ``metadata`` / ``meta``, ``image_size``,
``image_threshold`` and ``runtime`` (the name of the runtime that actually runs it).
"""

from __future__ import annotations

from pathlib import Path

from adkd.errors import ConfigError
from adkd.pipelines.predict.onnx_predictor import OnnxPredictor

RUNTIMES = ("auto", "onnxruntime")
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime"}


def check_runtime(runtime: str) -> str:
    """The canonical runtime name, or a one-line ConfigError listing the choices."""
    name = ALIASES.get(str(runtime).strip().lower(), str(runtime).strip().lower())
    if name not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}; pass one of those")
    return name


def open_predictor(
    path: str | Path, runtime: str = "auto", threshold: float | None = None, threads: int | None = None
) -> OnnxPredictor:
    """A predictor for the adkd ONNX file at ``path`` on ``runtime`` (``auto``: the one recorded at export)."""
    name = check_runtime(runtime)
    predictor = OnnxPredictor(path, threshold=threshold, threads=threads)
    predictor.runtime = "onnxruntime" if name == "auto" else name
    return predictor
