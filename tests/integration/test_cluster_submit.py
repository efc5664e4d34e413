"""`adkd submit -- train --categories …` on a Ray cluster the test starts (`ray start --head` on 127.0.0.1).

The cluster keeps Ray's token authentication on; the job gets the adkd package through its
runtime_env and writes to the MLflow store it was pointed at. Teardown stops only the processes of
the head this test started (its process group), never other Ray instances on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port, stop_ray_nodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
CATEGORIES = ("weave",)  # one: several categories at once are test_cluster.py's; here the job is under test


def _wait_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # 401 without a token: the dashboard is up
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"Ray dashboard {url} did not answer in {timeout:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    tmp = Path(tempfile.mkdtemp(prefix="adkd-rh-", dir="/tmp"))
    port, dashboard, client, agent, agent_grpc, metrics = (free_port() for _ in range(6))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = tmp / "ray-start.log"
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block",
        "--port", str(port), "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
        "--ray-client-server-port", str(client),
        # The job agent's HTTP port is 52365 for every Ray node by default: another Ray on this machine
        # (an embedded one from a parallel test) that took it first leaves this head with no job agent.
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics),
        "--num-cpus", "2", "--temp-dir", str(tmp / "ray"), "--disable-usage-stats",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_dashboard(url, proc, log)
        yield {"dashboard": url, "gcs": f"127.0.0.1:{port}", "tmp": str(tmp)}
    finally:
        # `ray stop` would stop every Ray on this machine; end only this head and what it started.
        stop_ray_nodes([proc])
        shutil.rmtree(tmp, ignore_errors=True)  # outside pytest's tmp_path (short paths)


def _adkd(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "adkd"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def submitted(ray_head: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    help_text = _adkd("train", "--help", env={"COLUMNS": "300"}, timeout=120).stdout
    if "--categories" not in help_text:
        pytest.fail("`adkd train` has no --categories (adkd/cli/train_cmd.py)")
    tmp = tmp_path_factory.mktemp("submit")
    data = tmp / "data"
    synthesize(data, categories=list(CATEGORIES), size=64, n_train=16, n_test=12, seed=1)
    store = tmp / "store"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    job_id = f"adkd-test-{uuid.uuid4().hex[:8]}"
    proc = _adkd(
        "submit",
        "--address", ray_head["dashboard"],
        "--tracking-uri", tracking_uri,
        "--env", f"ADKD_RUNS_DIR={store / 'runs'}",
        "--env", "ADKD_EXPERIMENT=submit-test",
        "--job-id", job_id,
        "--wait",
        "--",
        "train", "--categories", ",".join(CATEGORIES), "--data", str(data),
        "--model", "stfpm", "--preset", "cpu-smoke", "--set", "epochs=1", "--cpus-per-worker", "0.5",
    )  # fmt: skip
    return {
        "proc": proc, "job_id": job_id, "tracking_uri": tracking_uri, "store": store, "head": ray_head, "data": data,
    }  # fmt: skip


def test_submitted_training_job_succeeds(submitted: dict[str, Any]) -> None:
    proc = submitted["proc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"job {submitted['job_id']} ended SUCCEEDED" in proc.stdout
    assert "stfpm on 1 category" in proc.stdout  # the results table, printed by the job's driver


def test_runs_and_versions_land_in_the_store_the_job_was_pointed_at(submitted: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(submitted["tracking_uri"], registry_uri=submitted["tracking_uri"])
    experiment = client.get_experiment_by_name("submit-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.category != ''")
    assert sorted(r.data.tags["category"] for r in runs) == sorted(CATEGORIES)
    assert all(r.info.status == "FINISHED" for r in runs)
    for category in CATEGORIES:
        versions = client.search_model_versions(f"name='adkd-{category}'")
        assert [str(v.version) for v in versions] == ["1"]
    results = list((submitted["store"] / "runs").glob("all-*/results.json"))
    assert len(results) == 1


def test_jobs_commands_follow_the_job(submitted: dict[str, Any]) -> None:
    address = submitted["head"]["dashboard"]
    job_id = submitted["job_id"]
    listed = _adkd("jobs", "list", "--address", address, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert job_id[:12] in listed.stdout
    status = _adkd("jobs", "status", job_id, "--address", address, timeout=120)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = _adkd("jobs", "logs", job_id, "--address", address, timeout=120)
    assert logs.returncode == 0 and "results:" in logs.stdout
    missing = _adkd("jobs", "status", "no-such-job", "--address", address, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_jobs_stop_ends_a_running_job(submitted: dict[str, Any]) -> None:
    from adkd.platform.cluster import jobs

    address = submitted["head"]["dashboard"]
    job_id = f"adkd-stop-{uuid.uuid4().hex[:8]}"
    proc = _adkd(
        "submit", "--address", address, "--tracking-uri", submitted["tracking_uri"],
        "--env", f"ADKD_RUNS_DIR={submitted['store'] / 'runs-stopped'}", "--env", "ADKD_EXPERIMENT=stop-test",
        "--job-id", job_id, "--",
        "train", "--categories", CATEGORIES[0], "--data", str(submitted["data"]),
        "--model", "stfpm", "--preset", "cpu-smoke", "--set", "epochs=1000", "--cpus-per-worker", "0.5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    deadline = time.monotonic() + 300
    while jobs.status(job_id, address)["status"] == "PENDING" and time.monotonic() < deadline:
        time.sleep(1)
    assert jobs.status(job_id, address)["status"] == "RUNNING"  # 1000 epochs: far from done

    stopped = _adkd("jobs", "stop", job_id, "--address", address, timeout=300)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"job {job_id} ended STOPPED" in stopped.stdout
    assert jobs.status(job_id, address)["status"] == "STOPPED"
    again = _adkd("jobs", "stop", job_id, "--address", address, timeout=120)
    assert again.returncode == 0 and "already ended: STOPPED" in again.stdout
    status = _adkd("jobs", "status", job_id, "--address", address, timeout=120)
    assert status.returncode == 1 and "STOPPED" in status.stdout
