"""The served model decodes images the way training read them: sent bytes, then the predictor's ``load``."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from adkd.errors import DataError
from adkd.pipelines.predict.predictor import Loaded, Predictor
from adkd.platform.registry.pyfunc import _to_image


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _load(value: Any, size: int = 8) -> Loaded:
    """``value`` as the pyfunc takes it in: decoded, then loaded by a predictor of a ``size`` model."""
    predictor = Predictor()
    predictor._configure(Path("model.onnx"), {"image_size": size}, None)
    return predictor.load(_to_image(value))


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    item = _load(_png(Image.fromarray(ramp)))
    out = item.model_input
    assert item.notes and out.dtype == np.uint8 and out.shape == (8, 8, 3)  # notes: the `resized` column
    expected = (ramp.astype(np.int64) * 255 // 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert out.max() == 245  # a plain convert("RGB") would saturate everything above 255 to 255


def test_rgba_and_size_are_normalised_and_rgb_arrays_pass_through() -> None:
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 128))
    item = _load(_png(rgba))
    assert item.notes and item.model_input.shape == (8, 8, 3) and tuple(item.model_input[0, 0]) == (10, 20, 30)
    array = np.full((8, 8, 3), 7, dtype=np.uint8)
    same = _load(array)
    assert not same.notes and np.array_equal(same.model_input, array)


def test_garbage_is_one_clear_error() -> None:
    with pytest.raises(DataError, match="not base64"):
        _to_image("%%%")
    with pytest.raises(DataError, match="cannot be decoded as an image"):
        _to_image(base64.b64encode(b"not an image").decode())
