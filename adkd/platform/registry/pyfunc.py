"""The registered MLflow model: a pyfunc over the exported ONNX graph that takes encoded images.

``mlflow.pyfunc.load_model("models:/adkd-<category>/<version>").predict(df)`` and
``mlflow models serve`` accept a DataFrame with an ``image`` column of base64 PNG/JPEG strings
(``data:`` URLs too), raw bytes or uint8 arrays, and return one row per image: ``image_score``,
``normalized_score`` (0.5 = threshold), ``anomalous``, ``threshold``, ``resized`` and, unless the
``return_maps`` param is false, ``anomaly_map`` as nested lists at the input image's own size (the
model's ``resize`` policy undone). A request with rows that cannot be scored (not base64, not an image,
over ``MAX_PIXELS``, no ``image`` column) is refused as a whole with one line naming the rows: HTTP 400
from the scoring server.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from adkd.errors import DataError
from adkd.pipelines.data.images import MAX_PIXELS, RefusedBytes, decode_bytes

ONNX_ARTIFACT = "onnx_model"
INT8_ARTIFACT = "onnx_model_int8"  # the artifact that carries the int8 file beside ONNX_ARTIFACT
OV_INT8_ARTIFACT = "onnx_model_int8_openvino"  # OpenVINO's (NNCF) int8 file, when the run wrote one


def _to_image(value: Any) -> Any:
    """One input value as a PIL image (a DataError saying why when it is not one)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] == 3:
        return Image.fromarray(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(
                "input 'image' is not base64: send PNG/JPEG bytes base64-encoded (or a data: URL)"
            ) from None
    if not isinstance(value, (bytes, bytearray)):
        raise DataError(
            f"input 'image' has type {type(value).__name__}; send base64 PNG/JPEG strings, bytes or "
            "uint8 [H,W,3] arrays"
        )
    try:
        return decode_bytes(bytes(value), MAX_PIXELS)
    except RefusedBytes as exc:
        raise DataError(_refusal(exc, bytes(value[:12]))) from None


def _refusal(exc: RefusedBytes, start: bytes) -> str:
    """The one line a request's row gets for bytes ``decode_bytes`` refused (``start``: their first bytes)."""
    if exc.problem == "pixels" and exc.size:
        width, height = exc.size
        return (
            f"input 'image' is {width}x{height} pixels, more than the {MAX_PIXELS:,} this model decodes; "
            "downscale it first (the model sees it at its own input size anyway)"
        )
    if exc.problem == "pixels":
        return f"input 'image' has more than {MAX_PIXELS:,} pixels; downscale it first"
    if exc.problem == "unknown":
        return (
            f"input 'image' cannot be decoded as an image (unknown format; it starts with {start!r}); send PNG or JPEG"
        )
    return f"input 'image' cannot be decoded as an image ({exc.detail}); send PNG or JPEG"


class RejectedInput(MlflowException):
    """A request the model cannot score: HTTP 400 from ``mlflow models serve``, with one line saying why.

    MLflow's scoring server prefixes the message of a prediction error with a dump of the whole request
    (``Failed to predict data '<DataFrame>'``); this exception keeps its own one-line reason instead, which
    also keeps megabytes of base64 out of the answer.
    """

    def __init__(self, reason: str) -> None:
        self._reason = reason
        super().__init__(reason, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:  # type: ignore[override]
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        pass


def validate_request(model_input: Any) -> list[Any]:
    """Every image of a request as a PIL image, or ``RejectedInput`` naming the bad rows."""
    try:
        values = _images(model_input)
    except DataError as exc:
        raise RejectedInput(str(exc)) from None
    if not values:
        raise RejectedInput("the request holds no rows; send at least one image in column 'image'")
    decoded, bad = [], []
    for row, value in enumerate(values):
        try:
            decoded.append(_to_image(value))
        except DataError as exc:
            bad.append((row, str(exc)))
    if bad:
        first, reason = bad[0]
        rows = ", ".join(str(row) for row, _ in bad[1:11]) + (", ..." if len(bad) > 11 else "")
        more = f" ({len(bad) - 1} more bad row(s): {rows})" if len(bad) > 1 else ""
        raise RejectedInput(f"row {first}: {reason}{more}")
    return decoded


def _images(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if "image" in model_input.columns:
            return list(model_input["image"])
        if model_input.shape[1] == 1:
            return list(model_input.iloc[:, 0])
        raise DataError(f"input has columns {list(model_input.columns)}; send one column named 'image'")
    if isinstance(model_input, dict):
        if "image" not in model_input:
            raise DataError(f"input has keys {list(model_input)}; send one key named 'image'")
        value = model_input["image"]
        return list(value) if isinstance(value, (list, tuple, np.ndarray)) and not _is_single(value) else [value]
    if isinstance(model_input, np.ndarray):
        return [model_input] if _is_single(model_input) else list(model_input)
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    return [model_input]


def _is_single(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim == 3


class OnnxAnomalyModel(mlflow.pyfunc.PythonModel):
    """Decode → ONNX graph (resize, normalise, model, scores inside) → one row per image."""

    def load_context(self, context: Any) -> None:
        # The runtime: the model's config (mlflow's model_config) or ADKD_RUNTIME, else the one recorded at export.
        config = getattr(context, "model_config", None) or {}
        self.load(context.artifacts[ONNX_ARTIFACT], runtime=config.get("runtime"))

    def load(self, onnx_path: str | Path, runtime: str | None = None) -> OnnxAnomalyModel:
        from adkd.pipelines.predict.runtimes import open_predictor
        from adkd.settings import load_settings

        settings = load_settings()
        self.predictor = open_predictor(onnx_path, runtime=runtime or settings.runtime, cache_dir=settings.cache_dir)
        self.runtime = self.predictor.runtime
        return self

    # model_input has no type hint on purpose: MLflow would read one as the input schema.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image: scores, verdict, threshold, whether it was resized, and the map.

        Each image goes through the predictor's ``load`` and ``predict_loaded``: the code ``adkd predict`` runs.
        """
        params = params or {}
        return_maps = bool(params.get("return_maps", True))
        batch_size = int(params.get("batch_size", 8))
        images = validate_request(model_input)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            loaded = [self.predictor.load(img) for img in chunk]  # converted to RGB and placed as in training
            preds = self.predictor.predict_loaded(loaded, [""] * len(loaded))
            for item, pred in zip(loaded, preds, strict=True):
                row = {
                    "image_score": pred.score,
                    "normalized_score": pred.normalized_score,
                    "anomalous": pred.anomalous,
                    "threshold": self.predictor.image_threshold,
                    "resized": bool(item.notes),  # converted to RGB or brought to the model's size
                }
                if return_maps:  # at the input image's own size
                    row["anomaly_map"] = pred.anomaly_map.tolist()
                rows.append(row)
        return pd.DataFrame(rows)


def encode_png(image: np.ndarray) -> str:
    """A uint8 [H,W,3] array as a base64 PNG string (what the served model accepts)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def signature_and_example(image_size: int) -> tuple[Any, pd.DataFrame]:
    """Input/param signature of the pyfunc and a one-image input example (a grey PNG)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema(
            [
                ColSpec("double", "image_score"),
                ColSpec("double", "normalized_score"),
                ColSpec("boolean", "anomalous"),
                ColSpec("double", "threshold"),
                ColSpec("boolean", "resized"),
            ]
        ),
        params=ParamSchema([ParamSpec("return_maps", "boolean", True), ParamSpec("batch_size", "long", 8)]),
    )
    grey = np.full((image_size, image_size, 3), 128, dtype=np.uint8)
    return signature, pd.DataFrame({"image": [encode_png(grey)]})


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc (stated, so MLflow does not infer them in a subprocess)."""
    from importlib.metadata import version

    names = ("mlflow", "onnxruntime", "openvino", "numpy", "pandas", "pillow")
    return [f"{name}=={version(name)}" for name in names]
