"""A real ``mlflow server`` on 127.0.0.1 for integration tests: sqlite backend and artifacts in tmp."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adkd.settings import mlflow_server_env

STARTUP_TIMEOUT_S = 300.0  # the shared CI box can be slow; a healthy server answers in ~15 s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """One ``mlflow server`` process over a fixed store; can be stopped and started again on the same port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        cmd = [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        env = mlflow_server_env({**os.environ, "MLFLOW_TRACKING_URI": ""})  # as `adkd server start` runs it
        log = self.log_path.open("ab")
        # A new session so stop() can end the server and its worker processes together.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early; log: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.uri}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health in {STARTUP_TIMEOUT_S}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        # Wait until the port refuses connections, so "stopped" means unreachable.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.uri}/health", timeout=0.5)
            except requests.RequestException:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real mlflow server, shared by the tests of one module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="module")
def _module_restartable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-restartable"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def restartable_mlflow_server(_module_restartable_server: MlflowServer) -> Iterator[MlflowServer]:
    """A running server the test may ``stop()`` and ``start()`` again (same port, same store).

    One process per module (a start costs tens of seconds on a loaded box); each test gets it running,
    whatever the previous test left it as.
    """
    _module_restartable_server.start()
    yield _module_restartable_server
