"""Whole images through a tiled model: split into tiles, score them with any predictor, stitch the maps back.

A tiled model's graph scores tiles (``image_size`` in its metadata is the tile side); its ``tiling``
metadata says how to cut whole images and blend the tile maps (``adkd.pipelines.tiling.spec``).
``TiledPredictor`` wraps the runtime's predictor (ONNX Runtime, OpenVINO, an int8 file alike) and shows the
same face for whole images, so ``adkd predict``, ``adkd.load`` and the served model need nothing else:
``run`` takes whole images and returns stitched maps, ``load``/``predict`` return maps at each input's size.

Inputs keep their own resolution unless the model was trained at ``tiling.image_size`` (then they are
brought to that square with the model's ``resize`` policy first) or per position (then to the trained size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from adkd.pipelines.data.geometry import Placement, fit, placement, unfit
from adkd.pipelines.predict.predictor import Loaded, Predictor
from adkd.pipelines.tiling.spec import TilingSpec, score_tiled

TILES_PER_CALL = 8  # tiles per call of the inner predictor: a few MB of activations per tile at 256 px


class TiledPredictor(Predictor):
    """A predictor of whole images around ``inner``, a predictor of the model's tiles."""

    tiled = True

    def __init__(self, inner: Any, spec: TilingSpec | None = None, tiles_per_call: int = TILES_PER_CALL) -> None:
        spec = spec or TilingSpec.from_meta(inner.meta)
        if spec is None:
            raise ValueError(f"{getattr(inner, 'path', 'the model')} has no tiling metadata")
        self.inner, self.spec = inner, spec
        self.tiles_per_call = spec.tiles_per_call(tiles_per_call)
        self.path = getattr(inner, "path", None)
        self.meta = inner.meta
        self.resize = str(self.meta.get("resize") or "stretch")
        self.crop = None
        self.tile_size = int(inner.image_size)
        self.image_size = spec.image_size  # the square inputs are brought to; None: each keeps its own size
        self.image_threshold = float(inner.image_threshold)
        self.pixel_threshold = float(inner.pixel_threshold)

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    @runtime.setter
    def runtime(self, value: str) -> None:
        self.inner.runtime = value

    @property
    def runtime_reason(self) -> str:
        return getattr(self.inner, "runtime_reason", "")

    @runtime_reason.setter
    def runtime_reason(self, value: str) -> None:
        self.inner.runtime_reason = value

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stitched maps [B, H, W], image scores [B] and normalised scores [B] for same-size uint8 [B, H, W, 3]."""
        maps, scores = score_tiled(self.inner.run, batch, self.spec, self.tiles_per_call)
        return maps, scores, self.normalized(scores)

    def _place(self, img: Image.Image, notes: list[str]) -> tuple[np.ndarray, Placement | None]:
        """The trained square when the model has one (placed with ``resize``), the trained size per position
        (stretched, no placement), else the image at its own size."""
        if self.image_size is not None:
            size = self.image_size
            if img.size != (size, size):
                notes.append(f"resized {img.size[0]}x{img.size[1]} to {size}x{size} before tiling")
            where = placement(img.width, img.height, size, self.resize)
            return np.asarray(fit(img, size, self.resize, Image.Resampling.BILINEAR), dtype=np.uint8), where
        if self.spec.fixed_size is not None:  # per position: the trained size, stretched
            h, w = self.spec.fixed_size
            if img.size != (w, h):
                notes.append(f"resized {img.size[0]}x{img.size[1]} to {w}x{h} (the per-position model's size)")
                return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8), None
        return np.asarray(img, dtype=np.uint8), None

    def _at_original(self, amap: np.ndarray, item: Loaded) -> np.ndarray:
        """A stitched map at the size of the image it was loaded from."""
        if item.placement is not None:
            return unfit(amap, item.placement)
        h, w = item.original.shape[:2]
        if amap.shape == (h, w):
            return np.asarray(amap, dtype=np.float32)
        return np.asarray(Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F").resize((w, h), Image.BILINEAR))


def tiled_if_needed(predictor: Any) -> Any:
    """``predictor`` itself, or a ``TiledPredictor`` around it when its model is tiled."""
    spec = TilingSpec.from_meta(getattr(predictor, "meta", {}) or {})
    return predictor if spec is None else TiledPredictor(predictor, spec)
