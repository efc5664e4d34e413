"""The served model decodes images the way training read them."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from adkd.errors import DataError
from adkd.platform.registry.pyfunc import _decode


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    out, changed = _decode(_png(Image.fromarray(ramp)), size=8)
    assert changed and out.dtype == np.uint8 and out.shape == (8, 8, 3)
    expected = (ramp.astype(np.int64) * 255 // 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert out.max() == 245  # a plain convert("RGB") would saturate everything above 255 to 255


def test_rgba_and_size_are_normalised_and_rgb_arrays_pass_through() -> None:
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 128))
    out, changed = _decode(_png(rgba), size=8)
    assert changed and out.shape == (8, 8, 3) and tuple(out[0, 0]) == (10, 20, 30)
    array = np.full((8, 8, 3), 7, dtype=np.uint8)
    same, changed = _decode(array, size=8)
    assert not changed and np.array_equal(same, array)


def test_garbage_is_one_clear_error() -> None:
    with pytest.raises(DataError, match="not base64"):
        _decode("%%%", size=8)
    with pytest.raises(DataError, match="cannot be decoded as an image"):
        _decode(base64.b64encode(b"not an image").decode(), size=8)
