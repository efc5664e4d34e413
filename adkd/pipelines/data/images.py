"""Safe decoding of one image or mask file into uint8 arrays.

Every failure becomes an ``ImageReadError`` whose message names the file and the reason, so a
broken file never surfaces as a PIL traceback. RGBA (alpha dropped) and 16-bit (scaled to 8 bit)
images are converted here; the validation gate refuses them by rule unless the user skips it.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from adkd.errors import DataError
from adkd.pipelines.data.geometry import fit
from adkd.settings import decode_workers_override

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's default MAX_IMAGE_PIXELS, used when a caller set it to None
# Sent images (the served model, the station) larger than this are refused from their header, before a pixel is
# decoded: 10,000 x 10,000 RGB is 300 MB per image, per concurrent request.
MAX_PIXELS = 8192 * 8192
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageReadError(DataError):
    """A file cannot be decoded; ``reason`` is the short cause without the path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def decode_workers() -> int:
    """Threads for decoding (``ADKD_DECODE_WORKERS`` overrides): PIL releases the GIL while decoding."""
    override = decode_workers_override()
    return override if override is not None else max(1, min(8, os.cpu_count() or 1))


def max_pixels() -> int:
    return Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS


def _check_entry(path: Path) -> None:
    """Refuse links that loop or dangle and entries that are not regular files, before opening."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symlink loop (the link points back to itself)") from None
        if path.is_symlink():
            raise ImageReadError(path, f"broken symlink to {path.readlink()}") from None
        raise ImageReadError(path, f"cannot access file ({exc.strerror})") from None
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode ``path``; raise ImageReadError with the reason if that fails."""
    path = Path(path)
    _check_entry(path)
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (PIL cannot identify the format)") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open ({exc})") from None
    limit = max_pixels()
    if img.width * img.height > limit:
        img.close()
        raise ImageReadError(
            path,
            f"decompression bomb: header claims {img.width}x{img.height} pixels, over the limit of {limit} pixels",
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        img.close()
        raise ImageReadError(path, f"truncated or corrupt image data ({exc})") from None
    return img


class RefusedBytes(DataError):
    """Why ``decode_bytes`` refused: ``problem`` is ``pixels`` (``size`` over the limit; None: over PIL's own),
    ``format`` (``format`` not accepted), ``unknown`` (not an image) or ``corrupt`` (``detail`` says how)."""

    def __init__(self, problem: str, detail: str = "", size: tuple[int, int] | None = None, fmt: str = "") -> None:
        super().__init__(f"{problem}: {detail or size or fmt}")
        self.problem, self.detail, self.size, self.format = problem, detail, size, fmt


def decode_bytes(data: bytes, max_pixels: int = MAX_PIXELS, formats: Collection[str] | None = None) -> Image.Image:
    """Decode encoded image bytes; one over ``max_pixels`` (or of a format not in ``formats``) is refused from its
    header, before its pixels are read. Raises ``RefusedBytes``; callers word it for their users."""
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the limit below refuses those with a reason
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise RefusedBytes("pixels", size=img.size)
        if formats is not None and img.format not in formats:
            raise RefusedBytes("format", fmt=img.format or "")
        img.load()
    except Image.DecompressionBombError:  # PIL's own limit, at open: far above ours
        raise RefusedBytes("pixels") from None
    except UnidentifiedImageError:
        raise RefusedBytes("unknown") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RefusedBytes("corrupt", str(exc)) from None
    return img


def to_uint8(img: Image.Image) -> Image.Image:
    """The image as 8-bit ``L`` or ``RGB``: 16-bit scaled down, alpha dropped, palettes expanded."""
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if arr.max(initial=0) > 255 or img.mode != "I" else 255
        return Image.fromarray((np.clip(arr, 0, top) * 255 // top).astype(np.uint8))
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("1", "LA"):
        return img.convert("L")
    return img.convert("RGB")


def _resize_crop(
    img: Image.Image, size: int | None, crop: int | None, resample: int, resize: str = "stretch"
) -> Image.Image:
    if size is not None:
        # PIL widens the filter support when shrinking, i.e. antialiased resizing.
        img = fit(img, size, resize, resample)
    if crop is not None:
        w, h = img.size
        if crop > min(w, h):
            raise DataError(f"crop_size {crop} is larger than the image ({w}x{h}): use crop_size <= image_size")
        left, top = (w - crop) // 2, (h - crop) // 2
        img = img.crop((left, top, left + crop, top + crop))
    return img


def read_rgb(path: str | Path, size: int | None = None, crop: int | None = None, resize: str = "stretch") -> np.ndarray:
    """Decode ``path`` to uint8 ``[H, W, 3]``; grayscale becomes 3 equal channels; ``resize``: see geometry."""
    img = to_uint8(open_image(path)).convert("RGB")
    img = _resize_crop(img, size, crop, Image.Resampling.BILINEAR, resize)
    return np.asarray(img, dtype=np.uint8)


def read_mask(
    path: str | Path, size: int | None = None, crop: int | None = None, resize: str = "stretch"
) -> np.ndarray:
    """Decode a mask to uint8 ``[H, W]`` in {0, 1} (any value > 0 is a defect), nearest resampling."""
    img = open_image(path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    binary = Image.fromarray(((arr > 0) * 255).astype(np.uint8))
    binary = _resize_crop(binary, size, crop, Image.Resampling.NEAREST, resize)
    return (np.asarray(binary) > 0).astype(np.uint8)
