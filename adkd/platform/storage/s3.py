"""S3 through boto3: sync a prefix into a local cache (only what changed), upload folders, resolve `--data`.

Configuration is boto3's own: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and
~/.aws files, AWS_ENDPOINT_URL (or an explicit endpoint, e.g. from --s3-endpoint / ADKD_S3_ENDPOINT_URL).
Credentials are never put into messages or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adkd.errors import AdkdError, ConfigError, DataError, ServiceError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_STATE_DIR = ".state"  # bucket names cannot start with '.', so this never collides with a bucket folder
_LOCK_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class S3Uri:
    """A parsed `s3://bucket/prefix` (prefix without leading/trailing slashes, may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ConfigError(f"'{uri}' is not an S3 URI; write it as s3://bucket/prefix")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"'{uri}' has no bucket name; write it as s3://bucket/prefix")
        return cls(bucket, prefix.strip("/"))

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass
class SyncReport:
    """Outcome of one sync: where the files are and how many objects were fetched, kept or removed."""

    path: Path
    downloaded: int
    unchanged: int
    deleted: int
    bytes_downloaded: int


def s3_client(endpoint_url: str | None = None, profile: str | None = None) -> Any:
    """A boto3 S3 client from the standard AWS configuration; `endpoint_url` overrides AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(profile_name=profile)
    except ProfileNotFound as exc:
        raise ConfigError(
            f"AWS profile '{exc.kwargs.get('profile')}' is not in the AWS config files; "
            "set AWS_PROFILE to an existing profile or unset it"
        ) from None
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _endpoint_of(client: Any) -> str:
    return getattr(client.meta, "endpoint_url", None) or "the default AWS endpoint"


@contextlib.contextmanager
def _s3_errors(what: str, client: Any) -> Iterator[None]:
    """Turn botocore exceptions into one-line AdkdErrors that name the URI, never the credentials."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    def client_error(code: str) -> AdkdError:
        if code == "NoSuchBucket":
            return DataError(
                f"the bucket of {what} does not exist at {_endpoint_of(client)}; check the s3:// URI "
                "and AWS_ENDPOINT_URL / --s3-endpoint"
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return DataError(f"{what} was not found at {_endpoint_of(client)} (deleted meanwhile?); sync again")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
            return ServiceError(
                f"access to {what} was refused ({code}); check the AWS credentials "
                "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy"
            )
        return ServiceError(f"S3 request for {what} failed ({code}); see --debug for details")

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise ServiceError(
            f"no usable AWS credentials for {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE / ~/.aws/credentials"
        ) from None
    except (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
        RetriesExceededError,
    ):
        raise ServiceError(
            f"cannot reach the S3 endpoint {_endpoint_of(client)} for {what}; "
            "check AWS_ENDPOINT_URL / --s3-endpoint and the network"
        ) from None
    except ClientError as exc:
        raise client_error(str(exc.response.get("Error", {}).get("Code", "unknown"))) from None
    except S3UploadFailedError as exc:
        # boto3 wraps the ClientError of an upload into a message; recover its error code from the text.
        match = re.search(r"An error occurred \((\w+)\)", str(exc))
        raise client_error(match.group(1) if match else "upload failed") from None
    except BotoCoreError as exc:
        raise ServiceError(f"S3 request for {what} failed ({type(exc).__name__}); see --debug") from exc


def _safe_relative(key: str, uri: S3Uri) -> str:
    """The object's path below the prefix, refusing keys that would land outside the cache folder."""
    relative = key[len(uri.prefix) + 1 :] if uri.prefix else key
    norm = posixpath.normpath(relative)
    if relative.startswith("/") or norm == ".." or norm.startswith("../") or ".." in relative.split("/"):
        raise DataError(f"object key '{key}' in {uri} would be written outside the cache; rename the object")
    return relative


def _list_objects(client: Any, uri: S3Uri) -> dict[str, dict[str, Any]]:
    """{relative path: {"key", "size", "etag"}} for every object under the prefix (folder markers skipped)."""
    paginator = client.get_paginator("list_objects_v2")
    prefix = f"{uri.prefix}/" if uri.prefix else ""
    objects: dict[str, dict[str, Any]] = {}
    with _s3_errors(str(uri), client):
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                relative = _safe_relative(obj["Key"], uri)
                objects[relative] = {"key": obj["Key"], "size": int(obj["Size"]), "etag": obj["ETag"]}
    return objects


def cache_paths(uri: S3Uri, cache_dir: Path) -> tuple[Path, Path]:
    """(data folder, state folder with manifest + lock) of a URI inside `cache_dir`."""
    base = Path(cache_dir).expanduser() / "s3"
    data = base / uri.bucket / Path(*uri.prefix.split("/")) if uri.prefix else base / uri.bucket
    digest = hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    return data, base / _STATE_DIR / f"{uri.bucket}-{digest}"


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        return data["objects"] if isinstance(data, dict) and isinstance(data.get("objects"), dict) else {}
    except (OSError, ValueError):
        return {}  # missing or torn manifest: everything is re-checked against S3


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)


def _prune_empty_dirs(start: Path, stop: Path) -> None:
    current = start
    while current != stop and current.is_dir() and not any(current.iterdir()):
        current.rmdir()
        current = current.parent


def sync_prefix(
    uri: str,
    cache_dir: Path,
    endpoint_url: str | None = None,
    *,
    client: Any = None,
    lock_timeout: float = _LOCK_TIMEOUT_S,
) -> SyncReport:
    """Mirror `s3://bucket/prefix` into `cache_dir`, fetching only objects whose size or ETag changed.

    Safe for several processes at once: one holds a file lock on the prefix's state folder while the others
    wait; every file lands through a temp file + atomic rename. Local files whose objects were deleted from
    S3 are removed; files adkd did not download are left alone.
    """
    from filelock import FileLock, Timeout

    parsed = S3Uri.parse(uri)
    client = client or s3_client(endpoint_url)
    data_dir, state_dir = cache_paths(parsed, cache_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_dir / "sync.lock"))
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise ServiceError(
            f"another process has held the sync lock of {parsed} for {lock_timeout:.0f} s "
            f"({state_dir / 'sync.lock'}); wait for it or remove the lock file if no process is syncing"
        ) from None
    try:
        return _sync_locked(client, parsed, data_dir, state_dir / MANIFEST_NAME)
    finally:
        lock.release()


def _sync_locked(client: Any, uri: S3Uri, data_dir: Path, manifest_path: Path) -> SyncReport:
    remote = _list_objects(client, uri)
    if not remote:
        raise DataError(f"no objects under {uri}; check the s3:// URI (bucket and prefix)")
    manifest = _read_manifest(manifest_path)
    report = SyncReport(path=data_dir, downloaded=0, unchanged=0, deleted=0, bytes_downloaded=0)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for relative, obj in sorted(remote.items()):
            target = data_dir / relative
            known = manifest.get(relative)
            if (
                known
                and known.get("etag") == obj["etag"]
                and known.get("size") == obj["size"]
                and target.is_file()
                and target.stat().st_size == obj["size"]
            ):
                report.unchanged += 1
                continue
            _download(client, uri, obj, target)
            manifest[relative] = {"size": obj["size"], "etag": obj["etag"]}
            report.downloaded += 1
            report.bytes_downloaded += obj["size"]
        for relative in sorted(set(manifest) - set(remote)):
            stale = data_dir / relative
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
                _prune_empty_dirs(stale.parent, data_dir)
            del manifest[relative]
            report.deleted += 1
    finally:
        # Written even after a failure so the files fetched so far are not fetched again.
        _write_json_atomic(manifest_path, {"uri": str(uri), "objects": manifest})
    log.info(
        "synced %s: %d downloaded, %d unchanged, %d deleted",
        uri,
        report.downloaded,
        report.unchanged,
        report.deleted,
    )
    return report


def _download(client: Any, uri: S3Uri, obj: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise DataError(f"s3://{uri.bucket}/{obj['key']} collides with the folder {target}; rename the object")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with _s3_errors(f"s3://{uri.bucket}/{obj['key']}", client):
            client.download_file(uri.bucket, obj["key"], str(tmp))
        size = tmp.stat().st_size
        if size != obj["size"]:
            raise ServiceError(
                f"s3://{uri.bucket}/{obj['key']} arrived with {size} bytes instead of {obj['size']}; sync again"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def sync_from_s3(uri: str, cache_dir: Path, endpoint_url: str | None = None) -> Path:
    """Sync `s3://bucket/prefix` into `cache_dir` (only what changed) and return the local folder."""
    return sync_prefix(uri, cache_dir, endpoint_url).path


def upload_dir(local: Path, uri: str, endpoint_url: str | None = None, *, client: Any = None) -> int:
    """Upload every file under `local` to `s3://bucket/prefix/<relative path>`; returns the file count."""
    local = Path(local)
    if not local.is_dir():
        raise DataError(f"cannot upload {local}: it is not a folder")
    parsed = S3Uri.parse(uri)
    client = client or s3_client(endpoint_url)
    count = 0
    for path in sorted(local.rglob("*")):
        if not path.is_file():
            continue
        key = parsed.key(path.relative_to(local).as_posix())
        with _s3_errors(f"s3://{parsed.bucket}/{key}", client):
            client.upload_file(str(path), parsed.bucket, key)
        count += 1
    return count


def sync_dataset(
    uri: str,
    cache_dir: Path,
    endpoint_url: str | None = None,
    categories: list[str] | None = None,
) -> Path:
    """Sync an MVTec-layout data set (or only `categories` of it) into ``cache_dir`` and return its local root.

    With categories, only `prefix/<category>/` is fetched. ``endpoint_url`` None: boto3's own configuration.
    """
    parsed = S3Uri.parse(uri)
    if not categories:
        return sync_from_s3(uri, cache_dir, endpoint_url)
    client = s3_client(endpoint_url)
    for category in categories:
        if not category or "/" in category or category in (".", ".."):
            raise ConfigError(f"category '{category}' is not a folder name; check --category")
        sync_prefix(str(S3Uri(parsed.bucket, parsed.key(category))), cache_dir, client=client)
    return cache_paths(parsed, cache_dir)[0]
