"""Run an adkd ONNX model (uint8 RGB in; map, score and normalised score out) with ONNX Runtime."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.geometry import Placement, fit, placement, unfit

OUTPUTS = ("anomaly_map", "image_score", "normalized_score")  # as written by adkd.pipelines.export


@dataclass
class Loaded:
    """One input image: the RGB original, the model's square input made from it and where it went."""

    original: np.ndarray  # uint8 [H, W, 3]
    model_input: np.ndarray  # uint8 [S, S, 3]
    placement: Placement
    notes: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """One image's result: raw and normalised scores, verdict, map and mask at the input image's own size."""

    score: float
    normalized_score: float
    anomalous: bool
    anomaly_map: np.ndarray  # float32 [H, W]
    mask: np.ndarray  # bool [H, W]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "verdict": "anomalous" if self.anomalous else "normal",
            "notes": "; ".join(self.notes),
        }


def _metadata(session: Any) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def available_providers() -> list[str]:
    import onnxruntime as ort

    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    return [p for p in wanted if p in have]


class OnnxPredictor:
    """Loads an adkd ONNX file once and predicts batches of images."""

    def __init__(self, onnx_path: str | Path, threshold: float | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ConfigError(f"model file {self.path} does not exist; export one with `adkd export`")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=available_providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ConfigError(f"{self.path} is not a loadable ONNX model: {exc}") from None
        self.meta = _metadata(self.session)
        names = [o.name for o in self.session.get_outputs()]
        if not set(OUTPUTS) <= set(names):
            raise ConfigError(f"{self.path} is not an adkd model (outputs {names}, expected {', '.join(OUTPUTS)})")
        self.input_name = self.session.get_inputs()[0].name
        size = self.meta.get("image_size")
        if size is None:
            raise ConfigError(f"{self.path} has no image_size in its metadata; re-export it with `adkd export`")
        self.image_size = int(size[0] if isinstance(size, list) else size)
        self.resize = str(self.meta.get("resize") or "stretch")  # models exported before the setting: stretch
        eval_size = int(self.meta.get("eval_size") or self.image_size)
        self.crop = eval_size if eval_size != self.image_size else None
        thresholds = self.meta.get("thresholds") or {}
        self.image_threshold = float(threshold if threshold is not None else thresholds.get("image", np.nan))
        self.pixel_threshold = float(thresholds.get("pixel", np.nan))
        self.runtime = "onnxruntime"

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's export metadata (thresholds, image size, model, precision, ...)."""
        return dict(self.meta)

    def load(self, source: str | Path | np.ndarray | Image.Image) -> Loaded:
        """Decode ``source`` and make the model's input from it exactly as training did (``resize`` policy)."""
        from adkd.pipelines.data.images import open_image, to_uint8

        notes: list[str] = []
        if isinstance(source, np.ndarray):
            try:
                img = Image.fromarray(source)
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"array of shape {source.shape} and dtype {source.dtype} is not an image: {exc}"
                ) from None
        elif isinstance(source, Image.Image):
            img = source
        else:
            img = open_image(source)  # raises a DataError naming the file and the reason
        if img.mode != "RGB":
            notes.append(f"converted {img.mode} to RGB")
            img = to_uint8(img).convert("RGB")
        size = self.image_size
        where = placement(img.width, img.height, size, self.resize)
        if img.size != (size, size):
            how = "" if self.resize == "stretch" else f" ({self.resize})"
            notes.append(f"resized {img.size[0]}x{img.size[1]} to {size}x{size}{how}")
        # PIL's bilinear filter widens its support when shrinking (antialiasing), as the training loader does.
        model_input = fit(img, size, self.resize, Image.Resampling.BILINEAR)
        original = np.asarray(img, dtype=np.uint8)
        return Loaded(original, np.asarray(model_input, dtype=np.uint8), where, notes)

    def load_image(self, source: str | Path | np.ndarray | Image.Image) -> tuple[np.ndarray, list[str]]:
        """An RGB uint8 [S, S, 3] array at the model's size (decoded and resized exactly as in training)."""
        loaded = self.load(source)
        return loaded.model_input, loaded.notes

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs for a uint8 [B, S, S, 3] batch: maps [B, S, S], scores [B], normalised [B]."""
        amap, score, norm = self.session.run(list(OUTPUTS), {self.input_name: batch})
        return amap.reshape(len(batch), *amap.shape[-2:]), score.reshape(-1), norm.reshape(-1)

    def predict(self, images: list[Any], sources: list[str] | None = None) -> list[Prediction]:
        """Predictions for numpy arrays, PIL images or paths, in the order given; maps at each input's size."""
        loaded = [self.load(im) for im in images]
        names = [
            (sources[i] if sources else str(im) if isinstance(im, str | Path) else "") for i, im in enumerate(images)
        ]
        return self.predict_loaded(loaded, names)

    def predict_loaded(self, loaded: list[Loaded], sources: list[str]) -> list[Prediction]:
        """Run the model on images from ``load`` and map each anomaly map back to its original's size."""
        batch = np.stack([item.model_input for item in loaded])
        maps, scores, norms = self.run(batch)
        out = []
        for i, item in enumerate(loaded):
            score = float(scores[i])
            anomalous = score > self.image_threshold  # the same rule as training's scores.csv and the pyfunc
            amap = unfit(maps[i], item.placement, self.crop)
            out.append(
                Prediction(
                    score=score,
                    normalized_score=float(norms[i]),
                    anomalous=anomalous,
                    anomaly_map=amap,
                    mask=amap >= self.pixel_threshold,
                    source=sources[i],
                    notes=list(item.notes),
                )
            )
        return out
