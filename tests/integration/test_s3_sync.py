"""S3 sync/upload against a real moto S3 server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest

from adkd.errors import ConfigError, DataError, ServiceError
from adkd.platform.storage.data_roots import local_root
from adkd.platform.storage.s3 import (
    S3Uri,
    cache_paths,
    sync_dataset,
    sync_from_s3,
    sync_prefix,
    upload_dir,
)
from tests.cli_process import run_adkd
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _objects(n_train: int = 6) -> dict[str, bytes]:
    """An MVTec-shaped set of small objects with distinct contents."""
    objs = {f"bottle/train/good/{i:03d}.png": f"train-{i}".encode() * (i + 1) for i in range(n_train)}
    objs["bottle/test/broken/000.png"] = b"broken" * 50
    objs["bottle/ground_truth/broken/000_mask.png"] = b"mask" * 30
    return objs


def _put_all(bucket: str, prefix: str, objects: dict[str, bytes]) -> None:
    client = boto3.client("s3")
    for rel, body in objects.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=body)


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_parse_uri() -> None:
    assert S3Uri.parse("s3://bkt/a/b/") == S3Uri("bkt", "a/b")
    assert S3Uri.parse("s3://bkt") == S3Uri("bkt", "")
    assert S3Uri.parse("s3://bkt/a").key("x/y.png") == "a/x/y.png"
    with pytest.raises(ConfigError, match="not an S3 URI"):
        S3Uri.parse("/local/path")
    with pytest.raises(ConfigError, match="no bucket name"):
        S3Uri.parse("s3:///prefix")


def test_sync_downloads_only_what_changed(s3_bucket: str, tmp_path: Path) -> None:
    objects = _objects()
    _put_all(s3_bucket, "mvtec", objects)
    uri = f"s3://{s3_bucket}/mvtec"

    first = sync_prefix(uri, tmp_path / "cache")
    assert (first.downloaded, first.unchanged, first.deleted) == (len(objects), 0, 0)
    assert first.bytes_downloaded == sum(len(b) for b in objects.values())
    assert first.path == tmp_path / "cache" / "s3" / s3_bucket / "mvtec"
    assert _local_files(first.path) == objects
    stamps = {p: p.stat().st_mtime_ns for p in first.path.rglob("*") if p.is_file()}

    second = sync_prefix(uri, tmp_path / "cache")
    assert (second.downloaded, second.unchanged, second.deleted) == (0, len(objects), 0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    changed = "bottle/train/good/002.png"
    objects[changed] = b"a new version of the image"
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"mvtec/{changed}", Body=objects[changed])
    third = sync_prefix(uri, tmp_path / "cache")
    assert (third.downloaded, third.unchanged) == (1, len(objects) - 1)
    assert _local_files(third.path) == objects
    rewritten = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert rewritten == [third.path / changed]


def test_sync_removes_deleted_objects_and_repairs_local_damage(s3_bucket: str, tmp_path: Path) -> None:
    objects = _objects()
    _put_all(s3_bucket, "d", objects)
    uri = f"s3://{s3_bucket}/d"
    root = sync_from_s3(uri, tmp_path / "cache")

    gone = "bottle/test/broken/000.png"
    boto3.client("s3").delete_object(Bucket=s3_bucket, Key=f"d/{gone}")
    del objects[gone]
    damaged = "bottle/train/good/001.png"
    (root / damaged).write_bytes(b"truncated")
    user_file = root / "notes.txt"
    user_file.write_text("mine")

    report = sync_prefix(uri, tmp_path / "cache")
    assert (report.downloaded, report.deleted) == (1, 1)
    assert not (root / "bottle/test/broken").exists()  # emptied folder pruned
    assert _local_files(root) == objects | {"notes.txt": b"mine"}  # files adkd did not fetch are kept


def test_manifest_records_size_and_etag(s3_bucket: str, tmp_path: Path) -> None:
    _put_all(s3_bucket, "m", {"a/b.png": b"12345"})
    sync_from_s3(f"s3://{s3_bucket}/m", tmp_path / "cache")
    _, state = cache_paths(S3Uri(s3_bucket, "m"), tmp_path / "cache")
    manifest = json.loads((state / "manifest.json").read_text())
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="m/a/b.png")
    assert manifest["objects"] == {"a/b.png": {"size": 5, "etag": head["ETag"]}}


_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from adkd.platform.storage.s3 import sync_prefix
    uri, cache, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.01)
    start = time.time()
    r = sync_prefix(uri, cache)
    print(json.dumps({"downloaded": r.downloaded, "unchanged": r.unchanged, "start": start, "end": time.time()}))
    """
)


def test_two_processes_syncing_at_once_end_with_a_complete_cache(s3_bucket: str, tmp_path: Path) -> None:
    objects = _objects(n_train=40)
    _put_all(s3_bucket, "par", objects)
    uri = f"s3://{s3_bucket}/par"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, uri, str(tmp_path / "cache"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=os.environ.copy(),
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # both interpreters are up and polling for the start signal
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # Both were inside sync_prefix at the same time, so the lock (not luck) kept them apart.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert sorted(r["downloaded"] for r in results) == [0, len(objects)]
    assert sorted(r["unchanged"] for r in results) == [0, len(objects)]
    root, _ = cache_paths(S3Uri.parse(uri), tmp_path / "cache")
    assert _local_files(root) == objects
    assert not list(root.rglob("*.part"))


def test_missing_bucket_is_a_clear_error(s3_env: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"the bucket of s3://no-such-bucket-adkd/x does not exist"):
        sync_from_s3("s3://no-such-bucket-adkd/x", tmp_path / "cache")


def test_empty_prefix_is_a_clear_error(s3_bucket: str, tmp_path: Path) -> None:
    _put_all(s3_bucket, "here", {"a.png": b"x"})
    with pytest.raises(DataError, match=rf"no objects under s3://{s3_bucket}/elsewhere"):
        sync_from_s3(f"s3://{s3_bucket}/elsewhere", tmp_path / "cache")


def test_unreachable_endpoint_is_a_clear_error(s3_env: str, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ServiceError, match=f"cannot reach the S3 endpoint {endpoint}"):
        sync_from_s3("s3://bucket/x", tmp_path / "cache", endpoint_url=endpoint)
    assert time.monotonic() - start < 30


def test_missing_credentials_are_a_clear_error(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ServiceError, match="no usable AWS credentials") as err:
        sync_from_s3(f"s3://{s3_bucket}/x", tmp_path / "cache")
    assert "testing-secret-key" not in str(err.value)


def test_unknown_profile_is_a_config_error(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(ConfigError, match="AWS profile 'nope'"):
        sync_from_s3("s3://bucket/x", tmp_path / "cache")


def test_upload_dir_then_sync_round_trips(s3_bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "run"
    files = {"model.onnx": b"onnx-bytes", "checkpoints/epoch_1.pt": b"ckpt", "config.json": b"{}"}
    for rel, body in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(body)
    assert upload_dir(local, f"s3://{s3_bucket}/runs/r1") == 3
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["runs/r1/checkpoints/epoch_1.pt", "runs/r1/config.json", "runs/r1/model.onnx"]
    assert _local_files(sync_from_s3(f"s3://{s3_bucket}/runs/r1", tmp_path / "cache")) == files


def test_upload_to_missing_bucket_is_a_clear_error(s3_env: str, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="does not exist"):
        upload_dir(tmp_path, "s3://no-such-bucket-adkd/p")


def test_local_root(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put_all(s3_bucket, "ds", _objects())
    synced = local_root(f"s3://{s3_bucket}/ds", tmp_path / "cache")
    assert (synced / "bottle" / "train" / "good" / "000.png").is_file()
    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.chdir(tmp_path)
    assert local_root("local", tmp_path / "cache") == local  # relative roots come back absolute
    with pytest.raises(ConfigError, match="missing does not exist"):
        local_root(str(tmp_path / "missing"), tmp_path / "cache")


def test_explicit_endpoint_overrides_environment(s3_bucket: str, s3_server: str, tmp_path: Path, monkeypatch) -> None:
    _put_all(s3_bucket, "e", {"x.png": b"1"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # a dead endpoint
    root = sync_from_s3(f"s3://{s3_bucket}/e", tmp_path / "cache", endpoint_url=s3_server)
    assert (root / "x.png").read_bytes() == b"1"


def test_sync_dataset_fetches_only_the_requested_categories(s3_bucket: str, tmp_path: Path) -> None:
    bottle = _objects()
    cable = {k.replace("bottle", "cable"): v + b"c" for k, v in bottle.items()}
    _put_all(s3_bucket, "mvtec", bottle | cable)
    root = local_root(f"s3://{s3_bucket}/mvtec", tmp_path / "cache", categories=["bottle"])
    assert root == tmp_path / "cache" / "s3" / s3_bucket / "mvtec"
    assert _local_files(root) == bottle
    again = sync_prefix(f"s3://{s3_bucket}/mvtec/bottle", tmp_path / "cache")
    assert again.downloaded == 0
    with pytest.raises(ConfigError, match="not a folder name"):
        sync_dataset(f"s3://{s3_bucket}/mvtec", tmp_path / "cache", categories=["../x"])


def test_data_sync_takes_cache_dir_and_endpoint_from_settings(
    s3_bucket: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`adkd data sync` reads the cache folder and endpoint from the settings (environment here)."""
    _put_all(s3_bucket, "ds", {"bottle/train/good/0.png": b"0"})
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "settings-cache"))
    monkeypatch.setenv("ADKD_S3_ENDPOINT_URL", s3_server)
    done = _cli("data", "sync", f"s3://{s3_bucket}/ds")
    assert done.returncode == 0, done.stderr
    root = tmp_path / "settings-cache" / "s3" / s3_bucket / "ds"
    assert done.stdout.strip() == str(root)
    assert (root / "bottle/train/good/0.png").read_bytes() == b"0"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_adkd(args, cwd=REPO, env=os.environ.copy(), timeout=180)


def test_cli_upload_then_sync_and_wrong_bucket(s3_bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "ds"
    (local / "bottle/train/good").mkdir(parents=True)
    (local / "bottle/train/good/0.png").write_bytes(b"png")
    up = _cli("data", "upload", str(local), f"s3://{s3_bucket}/ds")
    assert up.returncode == 0, up.stderr
    assert f"uploaded 1 files to s3://{s3_bucket}/ds" in up.stdout

    bad = _cli("data", "sync", "s3://no-such-bucket-adkd/ds", "--cache-dir", str(tmp_path / "cache"))
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in bad.stderr
    assert "testing-secret-key" not in bad.stderr + bad.stdout
