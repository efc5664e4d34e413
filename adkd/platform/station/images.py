"""Uploaded images: checked before anything is kept, and kept under generated names (a folder or S3).

A client's file name is only ever shown (its last component, made printable), never used as a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from adkd.errors import ConfigError, DataError, ServiceError
from adkd.pipelines.data.images import MAX_PIXELS, RefusedBytes, decode_bytes

FORMATS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp"}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")


@dataclass
class Upload:
    """An accepted image: its bytes, decoded RGB pixels and what the page says about it."""

    data: bytes
    image: Image.Image
    extension: str
    sha256: str
    display_name: str
    notes: list[str] = field(default_factory=list)


def display_name(filename: str | None) -> tuple[str, list[str]]:
    """The name to show for a client's file name, and a note when it held a path or odd characters."""
    raw = filename or ""
    base = re.split(r"[\\/]", raw)[-1]
    shown = _UNPRINTABLE.sub("", base).strip()[:120] or "(unnamed)"
    notes = []
    if base != raw or shown != base:
        notes.append(
            f"the file name {_UNPRINTABLE.sub('?', raw)[:200]!r} held a path or control characters: "
            f"shown as {shown!r}; kept files get generated names"
        )
    return shown, notes


def check_upload(data: bytes, filename: str | None, max_bytes: int) -> Upload:
    """Decode an uploaded file or raise a DataError that names the file and the reason."""
    shown, notes = display_name(filename)
    if not data:
        raise DataError(f"{shown}: the file is empty; upload a PNG, JPEG, BMP, TIFF or WebP image")
    if len(data) > max_bytes:
        raise DataError(
            f"{shown}: {len(data) / 1e6:.1f} MB is more than the station accepts ({max_bytes / 1e6:.1f} MB, "
            "station.max_upload_mb)"
        )
    try:
        img = decode_bytes(data, MAX_PIXELS, FORMATS)
    except RefusedBytes as exc:
        if exc.problem == "pixels" and exc.size:
            width, height = exc.size
            raise DataError(
                f"{shown}: {width}x{height} pixels is more than the station decodes ({MAX_PIXELS:,} pixels); "
                "downscale it first (the model sees it at its own input size anyway)"
            ) from None
        if exc.problem == "pixels":
            raise DataError(f"{shown}: more than {MAX_PIXELS:,} pixels; downscale it first") from None
        if exc.problem == "format":
            raise DataError(
                f"{shown}: {exc.format or 'this'} format is not accepted; upload PNG, JPEG, BMP, TIFF or WebP"
            ) from None
        if exc.problem == "unknown":
            raise DataError(
                f"{shown}: not an image (it starts with {data[:12]!r}); upload a PNG, JPEG, BMP, TIFF or WebP image"
            ) from None
        raise DataError(f"{shown}: the image cannot be decoded ({exc.detail}); the file may be truncated") from None
    fmt = str(img.format)
    return Upload(data, img, FORMATS[fmt], hashlib.sha256(data).hexdigest(), shown, notes)


def new_key(category: str, extension: str) -> str:
    """A generated storage key: ``<category>/<YYYY-MM-DD>/<random>.<ext>``."""
    from adkd.platform.monitoring.monitor import utcnow

    return f"{category}/{utcnow():%Y-%m-%d}/{uuid.uuid4().hex}.{extension}"


def _check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"storage key {key!r} is not one the station generates")
    return key


class ImageStore(Protocol):
    """Where kept images go."""

    description: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


class LocalImageStore:
    """Kept images under a local folder; each file written to a temporary name, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.description = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3ImageStore:
    """Kept images under ``s3://bucket/prefix`` (credentials: boto3's own configuration)."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        from adkd.platform.storage.s3 import S3Uri, s3_client

        self.uri = S3Uri.parse(uri)
        self.client = s3_client(endpoint_url)
        self.description = str(self.uri)

    def _call(self, what: str, fn: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", exc.__class__.__name__)
            raise ServiceError(
                f"S3 {what} in {self.uri} failed ({code}); check station.store and the AWS configuration"
            ) from None

    def put(self, key: str, data: bytes) -> None:
        name = self.uri.key(_check_key(key))
        self._call("upload", lambda: self.client.put_object(Bucket=self.uri.bucket, Key=name, Body=data))

    def get(self, key: str) -> bytes:
        name = self.uri.key(_check_key(key))
        return self._call("download", lambda: self.client.get_object(Bucket=self.uri.bucket, Key=name)["Body"].read())

    def delete(self, key: str) -> None:
        name = self.uri.key(_check_key(key))
        self._call("delete", lambda: self.client.delete_object(Bucket=self.uri.bucket, Key=name))


def open_store(spec: str | None, runs_dir: Path, endpoint_url: str | None = None) -> ImageStore:
    """``station.store``: an ``s3://`` URI or a folder (default ``<runs_dir>/station``)."""
    if spec and spec.startswith("s3://"):
        return S3ImageStore(spec, endpoint_url)
    if spec and "://" in spec:
        raise ConfigError(f"station.store {spec!r} is neither a folder nor an s3:// URI; set one of those")
    return LocalImageStore(Path(spec) if spec else Path(runs_dir) / "station")
