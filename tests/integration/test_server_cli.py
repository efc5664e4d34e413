"""`adkd server start|status|stop` with the default SQLite store: stop leaves no process of the server's tree."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_process import run_adkd
from tests.integration.mlflow_fixtures import free_port
from tests.integration.test_mlflow_ui import _descendants, _kill_leftovers, _port_free, _running, _start_time

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _adkd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "COLUMNS": "200"})
    return run_adkd(args, env=env, timeout=600)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_server_stop_ends_the_whole_tree_and_frees_the_port(tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "server"
    launch = _adkd("server", "start", "--port", str(port), "--state-dir", str(state))
    assert launch.returncode == 0, launch.stdout + launch.stderr
    pid = json.loads((state / "server.json").read_text())["pid"]
    tree = {pid} | _descendants(pid)
    started = {p: _start_time(p) for p in tree}
    try:
        time.sleep(5)  # MLflow's job runner, were it on, starts its consumers after the server answers
        tree |= _descendants(pid)
        started.update({p: _start_time(p) for p in tree if p not in started})
        assert len(tree) >= 2, tree
        # MLflow's GenAI job runner and its huey consumers stay off (adkd.platform.services.mlflow_server).
        commands = [_cmdline(p) for p in tree]
        assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
        status = _adkd("server", "status", "--state-dir", str(state))
        assert status.returncode == 0 and "healthy" in status.stdout
        stopped = _adkd("server", "stop", "--state-dir", str(state))
        assert stopped.returncode == 0 and f"stopped server pid {pid}" in stopped.stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (any(_running(p) for p in tree) or not _port_free(port)):
            time.sleep(0.2)
        assert not [p for p in tree if _running(p)]
        assert _port_free(port)
        after = _adkd("server", "status", "--state-dir", str(state))
        assert after.returncode == 1 and "no adkd MLflow server recorded" in after.stdout
    finally:
        _kill_leftovers(tree, started)
