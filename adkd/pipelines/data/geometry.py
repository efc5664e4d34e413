"""How an image of any size becomes the model's square input, and how a map goes back to the image's size.

``stretch`` squashes the whole image to the square (aspect ratio lost); ``letterbox`` scales the longer
side to the square and pads the rest with black; ``center-crop`` scales the shorter side and cuts the
centred square. Masks follow the same geometry with nearest resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from adkd.errors import ConfigError

RESIZE_MODES = ("stretch", "letterbox", "center-crop")


@dataclass(frozen=True)
class Placement:
    """The part of the original (``src``, original pixels) and where it lands in the square (``dst``)."""

    original: tuple[int, int]  # (width, height)
    size: int
    src: tuple[float, float, float, float]  # left, top, right, bottom
    dst: tuple[int, int, int, int]


def placement(width: int, height: int, size: int, mode: str) -> Placement:
    """Where a ``width`` x ``height`` image goes in a ``size`` square under ``mode``."""
    if mode == "stretch":
        return Placement((width, height), size, (0.0, 0.0, float(width), float(height)), (0, 0, size, size))
    if mode == "letterbox":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (size - new_w) // 2, (size - new_h) // 2
        return Placement(
            (width, height), size, (0.0, 0.0, float(width), float(height)), (left, top, left + new_w, top + new_h)
        )
    if mode == "center-crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return Placement((width, height), size, (left, top, left + side, top + side), (0, 0, size, size))
    raise ConfigError(f"resize={mode!r} is invalid: use one of {', '.join(RESIZE_MODES)}")


def fit(img: Image.Image, size: int, mode: str, resample: int) -> Image.Image:
    """``img`` as a ``size`` square under ``mode`` (PIL antialiases when shrinking)."""
    where = placement(img.width, img.height, size, mode)
    if where.dst == (0, 0, size, size) and where.src == (0, 0, img.width, img.height):
        return img if img.size == (size, size) else img.resize((size, size), resample=resample)
    left, top, right, bottom = where.dst
    part = img.resize((right - left, bottom - top), resample=resample, box=where.src)
    if (left, top, right, bottom) == (0, 0, size, size):
        return part
    canvas = Image.new(img.mode, (size, size), 0)
    canvas.paste(part, (left, top))
    return canvas


def unfit(amap: np.ndarray, where: Placement, crop: int | None = None) -> np.ndarray:
    """A float map of the model's input (the square, or its centred ``crop``) at the original's size.

    Parts of the original the model did not see (cut off by center-crop or ``crop``) get the map's
    minimum: no evidence of an anomaly there.
    """
    amap = np.asarray(amap, dtype=np.float32)
    size = where.size
    floor = float(amap.min()) if amap.size else 0.0
    square = np.full((size, size), floor, dtype=np.float32)
    offset = (size - amap.shape[0]) // 2 if crop else 0
    square[offset : offset + amap.shape[0], offset : offset + amap.shape[1]] = amap
    left, top, right, bottom = where.dst
    inner = Image.fromarray(square[top:bottom, left:right], mode="F")
    width, height = where.original
    s_left, s_top, s_right, s_bottom = where.src
    x0, y0 = round(s_left), round(s_top)
    x1, y1 = round(s_right), round(s_bottom)
    out = np.full((height, width), floor, dtype=np.float32)
    out[y0:y1, x0:x1] = np.asarray(inner.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    return out
