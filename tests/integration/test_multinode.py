"""`adkd train --categories a,b --gpus-per-worker 0.25 --cpus-per-worker 2 --address …` on a 2-node Ray cluster.

Two `ray start` nodes on 127.0.0.1, each declaring 1 GPU as a Ray resource and each with scratch
and cache folders of its own (``TMPDIR``, ``ADKD_CACHE_DIR``), so a category trained on one node
cannot read what the other node wrote. The data set lives on a real S3 server (moto): each node
syncs the categories it trains into its own cache. The engine trains on CPU (no CUDA here): the
declared GPUs only exercise placement. Every category's outputs, MLflow child run (the data root as
the user gave it, a non-empty data fingerprint) and registered version must arrive on the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port, stop_ray_nodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
CATEGORIES = ("weave", "disc")


def _aws_env(endpoint: str, tmp: Path) -> dict[str, str]:
    return {
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def _alive_nodes(gcs: str, env: dict[str, str]) -> int:
    code = "import ray; ray.init(address='%s', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    done = subprocess.run([sys.executable, "-c", code % gcs], capture_output=True, text=True, env=env, timeout=120)
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return 0


@pytest.fixture(scope="module")
def two_nodes(s3_server: str) -> Iterator[dict[str, Any]]:
    # Short paths: Ray's unix socket paths must stay under ~107 characters.
    tmp = Path(tempfile.mkdtemp(prefix="adkd-2n-", dir="/tmp"))
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **_aws_env(s3_server, tmp)}
    base.pop("RAY_ADDRESS", None)
    # Token authentication stays on, as on a real cluster: every node and the driver share one token.
    base.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex})
    port = free_port()
    nodes: dict[str, dict[str, Any]] = {}
    procs: list[subprocess.Popen] = []
    try:
        for name in ("a", "b"):
            scratch, cache = tmp / name / "tmp", tmp / name / "cache"
            scratch.mkdir(parents=True)
            env = {**base, "TMPDIR": str(scratch), "ADKD_CACHE_DIR": str(cache)}
            ports = [free_port() for _ in range(4)]
            common = [
                "--block", "--num-cpus", "2", "--num-gpus", "1", "--node-ip-address", "127.0.0.1",
                "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
                "--metrics-export-port", str(ports[2]), "--node-manager-port", str(ports[3]),
                "--disable-usage-stats",
            ]  # fmt: skip
            if name == "a":
                head = ["--head", "--port", str(port), "--include-dashboard", "false",
                        "--ray-client-server-port", str(free_port()), "--temp-dir", str(tmp / "ray")]  # fmt: skip
                cmd = [str(BIN / "ray"), "start", *head, *common]
            else:
                cmd = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", *common]
            log = (tmp / f"ray-{name}.log").open("wb")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            nodes[name] = {"scratch": scratch, "cache": cache, "log": tmp / f"ray-{name}.log"}
            if name == "a":
                time.sleep(5)
        gcs = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        # `ray start` prints this once its node has joined; only then ask the cluster (each ask is a Python
        # process that imports Ray and connects: 2-3 CPU-s, once every 2 s while node b was still starting).
        started = [lambda name=name: "Ray runtime started" in nodes[name]["log"].read_text() for name in nodes]
        while not all(check() for check in started) or _alive_nodes(gcs, base) < 2:
            for proc, name in zip(procs, nodes, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start ({name}) exited: {nodes[name]['log'].read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the two Ray nodes did not both join in 180 s")
            time.sleep(2)
        yield {"gcs": gcs, "nodes": nodes, "env": base, "tmp": tmp}
    finally:
        stop_ray_nodes(procs)
        shutil.rmtree(tmp, ignore_errors=True)  # outside pytest's tmp_path (short paths): ~110 MB a run


@pytest.fixture(scope="module")
def trained(two_nodes: dict[str, Any], s3_server: str) -> dict[str, Any]:
    import boto3

    from adkd.pipelines.data.synthetic_dataset import synthesize

    tmp = two_nodes["tmp"]
    data = tmp / "data"
    synthesize(data, categories=list(CATEGORIES), size=64, n_train=12, n_test=8, seed=2)
    bucket = f"adkd-2n-{os.getpid()}"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-key")  # fmt: skip
    s3.create_bucket(Bucket=bucket)
    for path in data.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"ds/{path.relative_to(data)}")
    uri = f"s3://{bucket}/ds"
    out = tmp / "out"
    store = tmp / "store"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**two_nodes["env"], "MLFLOW_TRACKING_URI": tracking_uri, "ADKD_EXPERIMENT": "two-nodes",
           "ADKD_CACHE_DIR": str(tmp / "driver-cache"), "COLUMNS": "200"}  # fmt: skip
    proc = subprocess.run(
        [str(BIN / "adkd"), "train", "--categories", ",".join(CATEGORIES), "--data", uri,
         "--model", "stfpm", "--preset", "cpu-smoke", "--set", "epochs=1", "--set", "image_size=64",
         "--gpus-per-worker", "0.25", "--cpus-per-worker", "2", "--max-failures", "0",
         "--address", two_nodes["gcs"], "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=800, cwd=store,  # the runs folder (MLflow's artifacts)
    )  # fmt: skip
    return {"proc": proc, "uri": uri, "out": out, "tracking_uri": tracking_uri, **two_nodes}


def test_two_categories_train_one_on_each_node(trained: dict[str, Any]) -> None:
    proc = trained["proc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    placed = {}
    for name, node in trained["nodes"].items():
        synced = node["cache"] / "s3"
        placed[name] = sorted(p.name for p in synced.glob("*/ds/*") if p.is_dir()) if synced.is_dir() else []
    # 2 CPUs per category on 2-CPU nodes: a node holds one category at a time, so both nodes train.
    assert len(placed["a"]) == len(placed["b"]) == 1, placed
    assert sorted(placed["a"] + placed["b"]) == sorted(CATEGORIES), placed  # each category synced once, on its node
    # The driver made no data local (its cache holds at most the MLflow schema its store was seeded from).
    assert not (trained["tmp"] / "driver-cache" / "s3").exists()
    assert {p.name for p in (trained["tmp"] / "driver-cache").glob("*")} <= {"mlflow-schema"}


def test_outputs_arrive_under_out_on_the_driver(trained: dict[str, Any]) -> None:
    runs = list(trained["out"].glob("all-*"))
    assert len(runs) == 1, runs
    results = json.loads((runs[0] / "results.json").read_text())
    rows = {r["category"]: r for r in results["categories"]}
    assert sorted(rows) == sorted(CATEGORIES)
    assert all(r["status"] == "FINISHED" for r in rows.values()), rows
    for category in CATEGORIES:
        assert (runs[0] / category / "model.pt").is_file()
        assert (runs[0] / category / "model.onnx").is_file()


def test_child_runs_record_the_data_root_as_given_and_a_fingerprint(trained: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(trained["tracking_uri"], registry_uri=trained["tracking_uri"])
    experiment = client.get_experiment_by_name("two-nodes")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.category != ''")
    assert sorted(r.data.tags["category"] for r in runs) == sorted(CATEGORIES)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["data"] == trained["uri"]
        assert len(run.data.tags.get("data_fingerprint", "")) >= 16
    for category in CATEGORIES:
        versions = client.search_model_versions(f"name='adkd-{category}'")
        assert [str(v.version) for v in versions] == ["1"]


def test_untracked_run_writes_onnx_per_category_under_out(two_nodes: dict[str, Any], trained: dict[str, Any]) -> None:
    """`--categories … --no-tracking --out DIR --storage s3://…`: every output under DIR, each worker's own
    model.onnx, no store; the run's checkpoints and outputs went through S3 (no disk both nodes share)."""
    import boto3

    tmp = two_nodes["tmp"]
    cwd = tmp / "untracked"
    cwd.mkdir()
    out = tmp / "untracked-out"
    env = {**two_nodes["env"], "COLUMNS": "200"}
    bucket = trained["uri"].split("/")[2]
    proc = subprocess.run(
        [str(BIN / "adkd"), "train", "--categories", "weave", "--data", trained["uri"],
         "--model", "stfpm", "--preset", "cpu-smoke", "--set", "epochs=2", "--set", "image_size=64",
         "--cpus-per-worker", "1", "--max-failures", "0", "--no-tracking",
         "--address", two_nodes["gcs"], "--out", str(out), "--storage", f"s3://{bucket}/runs"],
        capture_output=True, text=True, env=env, timeout=800, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run,) = out.glob("all-*")
    rows = json.loads((run / "results.json").read_text())["categories"]
    assert [r["category"] for r in rows] == ["weave"]
    assert (run / "weave" / "model.onnx").is_file()
    session = boto3.Session(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"]]
    stored = {k.split("/", 2)[2] for k in objects if k.count("/") >= 2}  # runs/<run>-weave/<file>
    assert {"latest.json", "epoch-00001/last.pt", "epoch-00002/last.pt", "final/model.onnx"} <= stored, stored
    assert not list(cwd.rglob("*")), "nothing is written outside --out"
    assert not list(out.rglob("mlflow.db"))
