"""What `adkd predict` writes per image: an overlay and a mask at the image's own size, PNGs encoded at zlib's
fastest level (at Pillow's default the encoding took most of the command's time: benchmarks/predict_outputs.py)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from adkd.pipelines.predict.outputs import PNG_LEVEL, heatmap_overlay, write_image_outputs
from adkd.pipelines.predict.predictor import Prediction
from adkd.platform.station.inspector import overlay_png


def _zlib_level(png: Path | bytes) -> int:
    """FLEVEL of the first IDAT's zlib header: 0 fastest, 1 fast, 2 default, 3 best (RFC 1950)."""
    data, at = png if isinstance(png, bytes) else png.read_bytes(), 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            return data[at + 9] >> 6
        at += 12 + length
    raise AssertionError(f"{png} has no IDAT chunk")


def test_overlay_and_mask_are_the_image_size_and_written_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    amap = rng.random((48, 80)).astype(np.float32)
    pred = Prediction(0.9, 0.7, True, amap, amap > 0.5, "x.png")
    overlay, mask = write_image_outputs(pred, image, tmp_path, "x", 0.0, 1.0)
    assert np.array_equal(np.asarray(Image.open(overlay)), heatmap_overlay(image, amap, 0.0, 1.0))
    assert np.array_equal(np.asarray(Image.open(mask)) > 0, amap > 0.5)
    assert PNG_LEVEL == 1 and {_zlib_level(overlay), _zlib_level(mask)} == {0}  # zlib's "fastest" class
    station = overlay_png(amap, image, 0.0, 1.0)  # the station's overlays too
    assert _zlib_level(station) == 0 and np.array_equal(
        np.asarray(Image.open(io.BytesIO(station))), np.asarray(Image.open(overlay))
    )
