"""What every adkd predictor shares, whatever runs the graph: decoding, placement, verdicts, maps at input size.

A runtime (``OnnxPredictor``, ``OpenVinoPredictor``) only opens the file and implements ``run``; everything a
caller sees of an image (``load``, ``predict``, ``predict_loaded``) is defined once here, from the model's
export metadata, so the runtimes cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.geometry import Placement, fit, placement, unfit
from adkd.settings import openmp_threads

OUTPUTS = ("anomaly_map", "image_score", "normalized_score")  # as written by adkd.pipelines.export
MIN_RANGE = 1e-12  # the smallest score range normalisation divides by (constant validation maps)


@dataclass
class Loaded:
    """One input image: the RGB original, the model's input made from it and where it went."""

    original: np.ndarray  # uint8 [H, W, 3]
    model_input: np.ndarray  # uint8 [S, S, 3]
    placement: Placement | None  # None: a tiled model's input at the image's own (or trained) size
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


def thread_budget(threads: int | None = None) -> int | None:
    """The CPU threads a runtime may use: ``threads`` when given, else the process's OpenMP budget.

    torch reads ``OMP_NUM_THREADS``; ONNX Runtime and OpenVINO do not and start a thread per core. Ray sets the
    variable to each worker's CPUs, so without this a category packed on one CPU trained with one thread and
    then scored its artifact with every core. None (nothing set): the runtime's own default.
    """
    if threads:
        return int(threads)
    return openmp_threads()


def onnx_metadata(path: Path) -> dict[str, Any]:
    """The metadata_props of an ONNX file, JSON values decoded (weights not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
        raise ConfigError(f"{path} is not a loadable ONNX model: {exc}") from None
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


class Predictor:
    """Loads an adkd model once and predicts batches of images; subclasses open the file and implement ``run``."""

    runtime = "none"  # the variant that runs the graph (``adkd.pipelines.predict.runtimes.VARIANTS``)
    runtime_reason = ""  # why ``open_predictor`` picked it

    def _configure(self, path: Path, meta: dict[str, Any], threshold: float | None) -> None:
        """Read what decoding and verdicts need from the model's export metadata."""
        self.path = path
        self.meta = meta
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

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's export metadata (thresholds, image size, model, precision, ...)."""
        return dict(self.meta)

    @property
    def heat_range(self) -> tuple[float, float]:
        """The colour scale of map overlays: the validation range the normalised score uses."""
        t = self.meta.get("thresholds") or {}
        vmin, vmax = float(t.get("score_min", 0.0)), float(t.get("score_max", 1.0))
        return (vmin, vmax if vmax > vmin else vmin + 1.0)

    def normalized(self, scores: np.ndarray) -> np.ndarray:
        """Image scores normalised with the model's stored thresholds as the exported graph computes them:
        ``clamp((score - image threshold) / (score_max - score_min) + 0.5, 0, 1)`` (``evaluate.thresholds``)."""
        t = self.meta.get("thresholds") or {}
        span = max(float(t.get("score_max", 1.0)) - float(t.get("score_min", 0.0)), MIN_RANGE)
        shifted = np.asarray(scores, dtype=np.float32) - float(t.get("image", np.nan))
        return np.clip(shifted / span + 0.5, 0.0, 1.0).astype(np.float32)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs for a uint8 [B, S, S, 3] batch: maps [B, S, S], scores [B], normalised [B]."""
        raise NotImplementedError

    def run_placed(
        self, batch: np.ndarray, placements: Sequence[Placement | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``run``, each image's score read where its ``placement`` put the image: letterbox padding is no evidence.

        A padded image's score is its map's max over the image area (``adkd.pipelines.inference.validity``, as
        training scored it), normalised with the model's stored thresholds as the graph normalises.
        """
        maps, scores, norms = self.run(batch)
        if self.resize != "letterbox":
            return maps, scores, norms
        from adkd.pipelines.inference.validity import valid_mask

        scores, norms = scores.copy(), norms.copy()
        for i, where in enumerate(placements):
            valid = valid_mask(where, self.crop) if where is not None else None  # None: the image's own size
            if valid is not None and not valid.all():
                scores[i] = maps[i][valid].max()
                norms[i] = self.normalized(scores[i : i + 1])[0]
        return maps, scores, norms

    def load(self, source: str | Path | np.ndarray | Image.Image) -> Loaded:
        """Decode ``source`` and make the model's input from it exactly as training did (``resize`` policy)."""
        img, notes = decode(source)
        model_input, where = self._place(img, notes)
        return Loaded(np.asarray(img, dtype=np.uint8), model_input, where, notes)

    def _place(self, img: Image.Image, notes: list[str]) -> tuple[np.ndarray, Placement | None]:
        """The model's input made from the RGB ``img`` and where the image went in it (a note when resized)."""
        size = self.image_size
        where = placement(img.width, img.height, size, self.resize)
        if img.size != (size, size):
            how = "" if self.resize == "stretch" else f" ({self.resize})"
            notes.append(f"resized {img.size[0]}x{img.size[1]} to {size}x{size}{how}")
        # PIL's bilinear filter widens its support when shrinking (antialiasing), as the training loader does.
        return np.asarray(fit(img, size, self.resize, Image.Resampling.BILINEAR), dtype=np.uint8), where

    def _at_original(self, amap: np.ndarray, item: Loaded) -> np.ndarray:
        """A map of ``item``'s model input at the size of the image it was loaded from."""
        assert item.placement is not None
        return unfit(amap, item.placement, self.crop)

    def predict(self, images: list[Any], sources: list[str] | None = None) -> list[Prediction]:
        """Predictions for numpy arrays, PIL images or paths, in the order given; maps at each input's size."""
        loaded = [self.load(im) for im in images]
        names = [
            (sources[i] if sources else str(im) if isinstance(im, str | Path) else "") for i, im in enumerate(images)
        ]
        return self.predict_loaded(loaded, names)

    def predict_loaded(self, loaded: list[Loaded], sources: list[str]) -> list[Prediction]:
        """Run the model on images from ``load`` (same-size inputs together) and map each anomaly map back to its
        original's size."""
        out: list[Prediction | None] = [None] * len(loaded)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(loaded):
            by_shape.setdefault(item.model_input.shape, []).append(i)
        for indices in by_shape.values():
            batch = np.stack([loaded[i].model_input for i in indices])
            maps, scores, norms = self.run_placed(batch, [loaded[i].placement for i in indices])
            for j, i in enumerate(indices):
                score = float(scores[j])
                amap = self._at_original(maps[j], loaded[i])
                out[i] = Prediction(
                    score=score,
                    normalized_score=float(norms[j]),
                    anomalous=score > self.image_threshold,  # the same rule as training's scores.csv and the pyfunc
                    anomaly_map=amap,
                    mask=amap >= self.pixel_threshold,
                    source=sources[i],
                    notes=list(loaded[i].notes),
                )
        return out  # type: ignore[return-value]


def decode(source: str | Path | np.ndarray | Image.Image) -> tuple[Image.Image, list[str]]:
    """``source`` as an RGB PIL image (16-bit scaled, alpha dropped, as the data loader reads files) and a note when
    it had to be converted; a DataError naming the file or array and the reason when it is not an image."""
    from adkd.pipelines.data.images import open_image, to_uint8

    notes: list[str] = []
    if isinstance(source, np.ndarray):
        try:
            img = Image.fromarray(source)
        except (TypeError, ValueError) as exc:
            raise DataError(f"array of shape {source.shape} and dtype {source.dtype} is not an image: {exc}") from None
    elif isinstance(source, Image.Image):
        img = source
    else:
        img = open_image(source)  # raises a DataError naming the file and the reason
    if img.mode != "RGB":
        notes.append(f"converted {img.mode} to RGB")
        img = to_uint8(img).convert("RGB")
    return img, notes
