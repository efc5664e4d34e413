# ruff: noqa: F811  (pytest fixtures imported by name and used as arguments)
"""`adkd ui`: an MLflow UI on 127.0.0.1 over the embedded store, its own lines and links printed (the link opens
the training runs in a fresh browser); a signal stops all of it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.browser import browser, chromium_paths  # noqa: F401
from tests.integration.mlflow_fixtures import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _training_experiment(runs_dir: Path) -> str:
    """An adkd-style experiment with one finished training run in the embedded store; its id."""
    from mlflow import MlflowClient

    from adkd.platform.tracking.datasets import dataset_input
    from adkd.platform.tracking.labels import experiment_tags

    runs_dir.mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{runs_dir / 'mlflow.db'}")
    experiment = client.create_experiment(
        "synth", artifact_location=(runs_dir / "artifacts").as_uri(), tags=experiment_tags()
    )
    run = client.create_run(experiment, tags={"mlflow.runName": "stfpm-disc"})
    client.log_metric(run.info.run_id, "test/image_auroc", 0.9)
    # As a tracked training logs its data set: the runs table's Dataset column shows it.
    client.log_inputs(run.info.run_id, datasets=[dataset_input(str(runs_dir.parent / "synth"), "disc", "0123abcd" * 8)])
    client.set_terminated(run.info.run_id)
    return experiment


def _page_text(driver: Any, *wanted: str, timeout: float = 120.0) -> str:
    """The page's text once it shows every ``wanted`` string (or whatever it shows when the time is up)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(w in text for w in wanted):
            return text
        time.sleep(0.5)
    return text


def test_ui_prints_its_own_lines_and_its_link_opens_the_training_runs(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Without Chromium the printed lines and the API are still checked; the test then skips for the link alone.
    browser = request.getfixturevalue("browser") if chromium_paths() else None
    port = free_port()
    experiment = _training_experiment(tmp_path / "adkd-runs")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(tmp_path / "adkd-runs")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "adkd.cli.main", "ui", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    link = f"{url}/adkd/open?experiment={experiment}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        search = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 10}, timeout=60)
        assert search.status_code == 200

        if browser is not None:
            _open_the_link(browser, url, link, experiment)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.strip()]
    # adkd's lines only: MLflow's INFO lines, its middleware notice and Starlette's warnings are not passed on.
    assert lines[0].startswith(f"MLflow UI: {url}"), out
    assert lines[1:] == [
        f"ready at {url}",
        f"  runs of synth: {link}",
        f"  registered models: {url}/adkd/open?page=models",
    ], out
    if browser is None:
        pytest.skip("chromium/chromedriver are not installed: the printed link was not opened in a browser")


def _open_the_link(browser: Any, url: str, link: str, experiment: str) -> None:
    """A fresh browser (empty profile: MLflow's default is the GenAI view) opens the printed link."""
    browser.get(link)
    # The count shows before the table's rows are drawn: wait for the row and its Dataset cell too.
    text = _page_text(browser, "1 matching run", "stfpm-disc", "synth (0123abcd0123)")
    assert "stfpm-disc" in text and "1 matching run" in text, text[:2000]
    assert "synth (0123abcd0123)" in text, text[:2000]  # the Dataset column: name (adkd's fingerprint)
    assert "Token Usage" not in text and "Detect Issues" not in text, text[:2000]  # not the GenAI overview
    assert f"#/experiments/{experiment}/runs" in browser.current_url
    assert browser.execute_script("return localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
    # The choice stays with the browser: the experiment's plain address now opens the runs too.
    browser.get(f"{url}/#/experiments/{experiment}")
    text = _page_text(browser, "1 matching run")
    assert "1 matching run" in text and "Token Usage" not in text, text[:2000]


def _children_by_parent() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(entry.name))
    return out


def _descendants(pid: int) -> set[int]:
    children, found, todo = _children_by_parent(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent's reaping is pending


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_leftovers(pids: set[int], started: dict[int, str | None]) -> None:
    """SIGKILL what a failed test left running; a pid whose start time changed is someone else's now."""
    for pid in pids:
        if _running(pid) and started.get(pid) is not None and _start_time(pid) == started[pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_ui_stopped_by_signal_leaves_no_process_and_frees_the_port(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(tmp_path / "adkd-runs")})
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "adkd.cli.main", "ui", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    tree: set[int] = set()
    started: dict[int, str | None] = {}
    try:
        # Generous: on a loaded 2-core box mlflow ui's workers and job consumers take minutes to come up.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("adkd ui did not answer within 600 s")
        tree = _descendants(proc.pid)
        started = {p: _start_time(p) for p in tree}
        assert len(tree) >= 2, tree  # mlflow ui and at least its uvicorn server
        # Only the adkd process gets the signal, as from `kill PID`, a service manager or a closed terminal.
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == 128 + sig
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (any(_running(p) for p in tree) or not _port_free(port)):
            time.sleep(0.2)
        left = sorted(p for p in tree if _running(p))
        assert not left, f"still running after adkd ui ended: {left}"
        assert _port_free(port)
    finally:
        late = _descendants(proc.pid) - tree  # what runs now, should the test have failed before the signal
        started.update({p: _start_time(p) for p in late})
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_leftovers(tree | late, started)
        proc.wait(timeout=30)
