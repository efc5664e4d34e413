"""Request validation of the served model: bad rows are refused as a 400 with one line naming them."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from adkd.platform.registry.pyfunc import MAX_PIXELS, RejectedInput, encode_png, validate_request


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


GOOD = encode_png(np.full((8, 8, 3), 100, dtype=np.uint8))


def _rejected(frame: pd.DataFrame) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        validate_request(frame)
    return info.value


def test_good_rows_decode() -> None:
    out = validate_request(pd.DataFrame({"image": [GOOD, GOOD]}))
    first = np.asarray(out[0])
    assert len(out) == 2 and first.shape == (8, 8, 3) and int(first[0, 0, 0]) == 100


def test_corrupt_base64_names_the_row_and_is_a_400() -> None:
    exc = _rejected(pd.DataFrame({"image": [GOOD, "@@not base64@@", GOOD]}))
    assert exc.message.startswith("row 1: ") and "not base64" in exc.message
    assert "\n" not in exc.message
    assert exc.get_http_status_code() == 400
    assert json.loads(exc.serialize_as_json())["error_code"] == "INVALID_PARAMETER_VALUE"


def test_non_image_bytes_and_every_bad_row_are_counted() -> None:
    text = base64.b64encode(b"just a text file, not an image").decode()
    exc = _rejected(pd.DataFrame({"image": [text, GOOD, "%%%", text]}))
    assert exc.message.startswith("row 0: ") and "cannot be decoded as an image" in exc.message
    assert "it starts with b'just a text '" in exc.message
    assert exc.message.endswith("(2 more bad row(s): 2, 3)")


def test_oversized_image_is_refused_from_its_header() -> None:
    huge = _png_b64(Image.new("1", (10_000, 10_000)))  # 1-bit: cheap to build, 300 MB once decoded to RGB
    assert MAX_PIXELS < 10_000 * 10_000
    exc = _rejected(pd.DataFrame({"image": [GOOD, huge]}))
    assert exc.message.startswith("row 1: ") and "10000x10000 pixels" in exc.message and "downscale" in exc.message


def test_missing_image_column_and_empty_request() -> None:
    exc = _rejected(pd.DataFrame({"img": [GOOD], "other": [1]}))
    assert "columns ['img', 'other']" in exc.message and "'image'" in exc.message
    assert "no rows" in _rejected(pd.DataFrame({"image": []})).message


def test_scoring_server_prefix_does_not_replace_the_reason() -> None:
    # MLflow's scoring server rewrites e.message with a dump of the request; the one-line reason stays.
    exc = RejectedInput("row 3: bad")
    exc.message = "Failed to predict data '<the whole DataFrame>'. \nError: row 3: bad"
    assert isinstance(exc, MlflowException) and exc.message == "row 3: bad"
    assert json.loads(exc.serialize_as_json())["message"] == "row 3: bad"
