"""Issue 9: MLflow on PostgreSQL with artifacts on S3 (moto), adkd trained, promoted and used through it.

Real processes on 127.0.0.1: a PostgreSQL cluster made by initdb, moto's S3 server, and the MLflow server
started by `adkd server start`. The AWS credentials are fake but unique, and must appear nowhere in what
MLflow stored or logged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_process import run_adkd
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
KEY_ID = "AKIAADKDFAKE" + uuid.uuid4().hex[:8].upper()
SECRET = "adkd-fake-secret-" + uuid.uuid4().hex


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server as the `postgres` system user when we are root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    # Not under pytest's tmp folder: that is private to root and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="adkd-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)  # fmt: skip
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "pg.log"), "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE mlflow"],
                       check=True, capture_output=True)  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(postgres: str, s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    import boto3

    work = tmp_path_factory.mktemp("stack")
    bucket = f"adkd-artifacts-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_server,
        MLFLOW_S3_ENDPOINT_URL=s3_server,
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        ADKD_RUNS_DIR=str(work / "runs"),
        ADKD_CACHE_DIR=str(work / "cache"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        COLUMNS="200",
    )
    env.pop("RAY_ADDRESS", None)
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                      region_name="us-east-1")  # fmt: skip
    s3.create_bucket(Bucket=bucket)
    port = free_port()
    state = work / "server"
    proc = run_adkd(["server", "start", "--port", str(port), "--state-dir", str(state), "--backend-store-uri", postgres,
                     "--artifacts-destination", f"s3://{bucket}/mlflow"], env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    try:
        yield {"env": env, "work": work, "port": port, "bucket": bucket, "s3": s3, "state": state,
               "postgres": postgres}  # fmt: skip
    finally:
        run_adkd(["server", "stop", "--state-dir", str(state)], env=env)


def _adkd(stack: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run_adkd(args, env=stack["env"], cwd=stack["work"], timeout=1200, ok=ok)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on ``port`` (from /proc, IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_server_listens_only_on_loopback(stack: dict) -> None:
    addresses = _listening_addresses(stack["port"])
    assert addresses == {"0100007F"}, f"mlflow server listens on {addresses}, expected only 127.0.0.1"


def test_train_promote_predict_through_postgres_and_s3(stack: dict) -> None:
    data = stack["work"] / "synth"
    # One category through the whole stack (several at once: test_cluster.py, test_multinode.py).
    _adkd(stack, "data", "synth", str(data), "--categories", "disc", "--train", "20", "--test", "12")
    out = _adkd(stack, "train", "--categories", "disc", "--data", str(data), "--model", "rd",
                "--preset", "cpu-smoke", "--set", "epochs=2", "--num-cpus", "2")  # fmt: skip
    assert "disc" in out.stdout and "rd on 1 category" in out.stdout

    import onnx

    s3 = stack["s3"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack["bucket"]).get("Contents", [])]
    categories = set()
    for key in (k for k in keys if k.endswith(".onnx")):
        model = onnx.load_from_string(s3.get_object(Bucket=stack["bucket"], Key=key)["Body"].read())
        meta = {p.key: p.value for p in model.metadata_props}
        categories.add(meta.get("category", "").strip('"'))
    assert categories == {"disc"}, f"ONNX models found by boto3 in the bucket: {categories} ({keys})"

    listed = _adkd(stack, "registry", "list")
    assert "adkd-disc" in listed.stdout
    _adkd(stack, "registry", "promote", "disc", "--version", "1", "--to", "production")
    pred = stack["work"] / "pred"
    _adkd(stack, "predict", str(data / "disc" / "test" / "good"), "--model", "models:/adkd-disc@production",
          "--out", str(pred))  # fmt: skip
    assert (pred / "predictions.csv").is_file()


def _database_text(postgres: str) -> str:
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    cmd = ["pg_dump", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "mlflow"]
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_credentials_never_reach_mlflow(stack: dict) -> None:
    """Runs after the training test in this module: the whole store, bucket and logs hold no credential."""
    dump = _database_text(stack["postgres"])
    assert "adkd-disc" in dump, "the database dump should hold the registered model (did training run?)"
    haystacks = {"postgres dump": dump}
    s3 = stack["s3"]
    for obj in s3.list_objects_v2(Bucket=stack["bucket"]).get("Contents", []):
        body = s3.get_object(Bucket=stack["bucket"], Key=obj["Key"])["Body"].read()
        haystacks[f"s3://{stack['bucket']}/{obj['Key']}"] = body.decode("latin-1")
    for path in [*stack["work"].rglob("*.log"), *(stack["work"] / "runs").rglob("*")]:
        if path.is_file() and path.stat().st_size < 50_000_000:
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    assert len(haystacks) > 10
    for where, text in haystacks.items():
        assert SECRET not in text, f"the AWS secret key leaked into {where}"
        assert KEY_ID not in text, f"the AWS access key id leaked into {where}"
