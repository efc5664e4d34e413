"""A child tree started with run_until_stopped ends with its parent, even parts that left its session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adkd.platform.services.process_tree import alive, process_tree

REPO = Path(__file__).resolve().parents[3]
# A parent that runs a shell; the shell starts one sleeper in its group and one in a session of its own
# (as mlflow's job runner does), writes their pids, and waits.
PARENT = """
import sys
from adkd.platform.services.process_tree import run_until_stopped
code, sig = run_until_stopped(["sh", "-c", sys.argv[1]], grace_s=5)
print(f"code={code} signal={sig}", flush=True)
"""
TREE = "sleep 300 & echo $! > {out}.a; setsid sleep 300 & echo $! > {out}.b; wait"


def _wait_for(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


@pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform != "linux", reason="reads /proc; needs setsid")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_parent_stops_the_whole_tree(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "pid"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, TREE.format(out=out)], env=env, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    sleepers = [_wait_for(Path(f"{out}.a")), _wait_for(Path(f"{out}.b"))]
    try:
        tree = process_tree(parent.pid)
        assert set(sleepers) <= set(tree)
        assert os.getsid(sleepers[1]) != os.getsid(parent.pid)  # outside the group a killpg would reach
        parent.send_signal(sig)
        stdout, _ = parent.communicate(timeout=30)
        assert f"code=None signal={int(sig)}" in stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in sleepers):
            time.sleep(0.05)
        assert not [p for p in sleepers if alive(p)]
    finally:
        for pid in sleepers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_a_child_that_ends_by_itself_returns_its_code() -> None:
    from adkd.platform.services.process_tree import run_until_stopped

    assert run_until_stopped([sys.executable, "-c", "raise SystemExit(3)"]) == (3, None)


def test_server_status_counts_a_zombie_server_as_not_running(tmp_path: Path) -> None:
    """`adkd server status` reads the recorded pid with the same ``alive`` that stops trees: an exited server
    not yet reaped (a zombie) still answers ``kill(pid, 0)`` but is not running."""
    import json

    from typer.testing import CliRunner

    from adkd.cli.main import app
    from adkd.platform.services.mlflow_server import STATE_FILE, server_status

    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)  # exited, not reaped: a zombie
        os.kill(child.pid, 0)  # the weaker check would call it running
        state = {"pid": child.pid, "host": "127.0.0.1", "port": 1, "backend_store_uri": "sqlite:///x.db",
                 "artifacts_destination": str(tmp_path), "log_path": str(tmp_path / "log")}  # fmt: skip
        (tmp_path / STATE_FILE).write_text(json.dumps(state))
        assert server_status(tmp_path)[1:] == (False, False)
        result = CliRunner().invoke(app, ["server", "status", "--state-dir", str(tmp_path)])
        assert result.exit_code == 1 and "not running" in result.output, result.output
    finally:
        child.wait()
