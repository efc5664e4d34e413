"""Make a data root local: the one place that knows ``s3://``.

A run's data root is what the user gave: a folder or an ``s3://bucket/prefix`` URI. Everything
below the platform reads local folders, so a run makes its root local here (on the node that
trains it) and keeps the root as given for tracking.
"""

from __future__ import annotations

from pathlib import Path

from adkd.errors import ConfigError

S3_SCHEME = "s3://"


def is_remote(data: str) -> bool:
    return str(data).startswith(S3_SCHEME)


def local_root(
    data: str, cache_dir: Path, endpoint_url: str | None = None, categories: list[str] | None = None
) -> Path:
    """The absolute local folder of ``data``: a folder as given, or the synced cache of an s3:// URI.

    With ``categories`` only those folders of an s3:// data set are fetched. A folder comes back
    absolute: Ray Tune runs each trial in a folder of its own.
    """
    if is_remote(data):
        from adkd.platform.storage.s3 import sync_dataset

        return sync_dataset(data, cache_dir, endpoint_url, categories).resolve()
    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data root {data} does not exist; pass the folder that holds the category folders")
    return root


def check_category(data: str, category: str) -> None:
    """A local root must hold ``category`` (checked before any tracking run is created); s3:// is checked on sync."""
    if is_remote(data):
        return
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} does not exist; pass the folder that holds the category folders")
    if not (root / category).is_dir():
        raise ConfigError(f"category {category!r} not found under {root}; pick one of its folders or check --data")


def list_categories(data: str, wanted: list[str] | None, endpoint_url: str | None = None) -> list[str]:
    """``wanted`` (checked when the data is local) or every category folder under ``data``."""
    if is_remote(data):
        return wanted or _s3_categories(data, endpoint_url)
    from adkd.pipelines.data.mvtec import resolve_categories

    return resolve_categories(data, wanted or None)


def _s3_categories(data: str, endpoint_url: str | None) -> list[str]:
    """Top-level folders under an s3:// data root (listing only: nothing is downloaded here)."""
    from adkd.platform.storage.s3 import S3Uri, s3_client

    uri = S3Uri.parse(data)
    client = s3_client(endpoint_url)
    prefix = f"{uri.prefix}/" if uri.prefix else ""
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=prefix, Delimiter="/"):
        names.extend(p["Prefix"][len(prefix) :].strip("/") for p in page.get("CommonPrefixes", []))
    if not names:
        raise ConfigError(f"no category folders under {data}; check the URI or pass --categories")
    return sorted(names)
