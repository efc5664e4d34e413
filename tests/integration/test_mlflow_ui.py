"""`adkd ui`: an MLflow UI on 127.0.0.1 over the embedded store, its URL printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.mlflow_fixtures import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_ui_serves_the_embedded_store(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(tmp_path / "adkd-runs")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "adkd.cli.main", "ui", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        search = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 10}, timeout=10)
        assert search.status_code == 200
        assert (tmp_path / "adkd-runs" / "mlflow.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert f"MLflow UI: {url}" in out
