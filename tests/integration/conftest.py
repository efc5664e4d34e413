"""Real local services for integration tests, all on 127.0.0.1.

Fixtures:
- ``s3_server`` (session): a ``moto_server`` process; yields its endpoint URL (``http://127.0.0.1:<port>``).
- ``s3_env`` (function): fake AWS credentials + ``AWS_ENDPOINT_URL``/``MLFLOW_S3_ENDPOINT_URL`` pointing at
  ``s3_server``, with ~/.aws files hidden; yields the endpoint URL.
- ``s3_bucket`` (function): a fresh, uniquely named bucket on ``s3_server`` (uses ``s3_env``); yields its name.
- ``file_server`` (function): an HTTP file server with Range support over a temp folder; see ``FileServer``.
- ``promoted`` (session): a synthetic category trained with `adkd train`, registered as adkd-disc v1 in a
  SQLite store and promoted to production; shared by the predict, serving and registry-display tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.cli_process import run_adkd


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_ray_nodes(procs: list[subprocess.Popen], wait_s: float = 3.0) -> None:
    """End `ray start --block` processes (each started in its own session) and every process they started.

    SIGTERM goes to each `ray start` process alone: an idle node stops its daemons and exits in about 2 s
    (measured). Sent to the whole process group it stopped nothing in 30 s, and a node that has run jobs did
    not finish within 15 s either; the throwaway nodes keep nothing worth a longer wait, so each group gets
    SIGKILL for what is left after ``wait_s``.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):  # daemons left behind, also when the parent has exited
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real moto S3 server process on 127.0.0.1; yields the endpoint URL, killed at session end."""
    exe = Path(sys.executable).with_name("moto_server")
    cmd = str(exe) if exe.exists() else shutil.which("moto_server")
    if cmd is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([cmd, "-p", str(port), "-H", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint + "/", proc, timeout=60)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and MLflow's S3 artifact store) at ``s3_server`` with throwaway credentials."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A new empty bucket on the moto server (unique name, so tests never see each other's objects)."""
    import boto3

    name = f"adkd-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@dataclass
class FileServer:
    """An HTTP server on 127.0.0.1 serving files from ``root`` with single-range (`bytes=N-` / `N-M`) support.

    ``log`` records every GET: {"path", "range", "status", "sent"}. ``cut_after[name] = n`` makes the next
    GET of ``name`` announce the full length, send only ``n`` bytes and drop the connection (one shot).
    """

    url: str
    root: Path
    log: list[dict] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)


def _handler(server_state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/").split("?", 1)[0]
            path = server_state.root / name
            entry = {"path": name, "range": self.headers.get("Range"), "status": 0, "sent": 0}
            server_state.log.append(entry)
            if not name or ".." in name or not path.is_file():
                entry["status"] = 404
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            start, end = 0, len(data) - 1
            status = 200
            if entry["range"]:
                spec = entry["range"].removeprefix("bytes=")
                first, _, last = spec.partition("-")
                start = int(first)
                end = int(last) if last else len(data) - 1
                if start >= len(data):
                    entry["status"] = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start : end + 1]
            entry["status"] = status
            self.send_response(status)
            self.send_header("Content-Type", "application/x-xz")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            cut = server_state.cut_after.pop(name, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                entry["sent"] = min(cut, len(body))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)
            entry["sent"] = len(body)

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A real HTTP file server thread on 127.0.0.1 over ``tmp_path / "www"``; stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    state = FileServer(url="", root=root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic category trained, registered as adkd-disc v1 and promoted to production."""
    work = tmp_path_factory.mktemp("predict")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", ADKD_RUNS_DIR=str(work / "runs"),
               ADKD_CACHE_DIR=str(work / "cache"), COLUMNS="200",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # fmt: skip
    data = work / "synth"

    def run(args: list[str]) -> None:
        run_adkd(args, env=env, cwd=work, timeout=900, ok=True)

    run(["data", "synth", str(data), "--categories", "disc", "--train", "24", "--test", "16"])
    run(["train", "--category", "disc", "--data", str(data), "--model", "rd", "--preset", "cpu-smoke",
         "--set", "epochs=3"])  # fmt: skip
    run(["registry", "promote", "disc", "--version", "1", "--to", "production"])
    metrics = json.loads((work / "runs" / "train" / "rd" / "disc" / "metrics.json").read_text())
    return {"work": work, "env": env, "data": data, "metrics": metrics}


@pytest.fixture(scope="session")
def served(promoted: dict) -> Iterator[str]:
    """adkd-disc@production behind `mlflow models serve` on 127.0.0.1; yields the invocations URL.

    One server for the modules of the ``promoted`` group (tests/conftest.py), which run on one worker.
    """
    port = free_port()
    log_path = promoted["work"] / "serve-requests.log"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/adkd-disc@production", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=promoted["env"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 300 s"
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
