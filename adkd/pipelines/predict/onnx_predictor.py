"""Run an adkd ONNX model (uint8 RGB in; map, score and normalised score out) with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adkd.errors import ConfigError
from adkd.pipelines.predict.predictor import OUTPUTS, Loaded, Prediction, Predictor, decode_metadata, thread_budget

__all__ = ["OUTPUTS", "Loaded", "OnnxPredictor", "Prediction", "available_providers", "session_options"]


def _metadata(session: Any) -> dict[str, Any]:
    return decode_metadata(dict(session.get_modelmeta().custom_metadata_map))


def available_providers() -> list[str]:
    import onnxruntime as ort

    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    return [p for p in wanted if p in have]


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options for every session adkd opens: its own log quiet, at most ``thread_budget`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads := thread_budget(threads):
        opts.intra_op_num_threads = threads
    return opts


class OnnxPredictor(Predictor):
    """Loads an adkd ONNX file once into ONNX Runtime and predicts batches of images."""

    runtime = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threshold: float | None = None, threads: int | None = None):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist; export one with `adkd export`")
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=available_providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ConfigError(f"{path} is not a loadable ONNX model: {exc}") from None
        names = [o.name for o in self.session.get_outputs()]
        if not set(OUTPUTS) <= set(names):
            raise ConfigError(f"{path} is not an adkd model (outputs {names}, expected {', '.join(OUTPUTS)})")
        self.input_name = self.session.get_inputs()[0].name
        self._configure(path, _metadata(self.session), threshold)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs for a uint8 [B, S, S, 3] batch: maps [B, S, S], scores [B], normalised [B]."""
        amap, score, norm = self.session.run(list(OUTPUTS), {self.input_name: batch})
        return amap.reshape(len(batch), *amap.shape[-2:]), score.reshape(-1), norm.reshape(-1)
