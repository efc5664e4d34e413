"""A single-box MLflow tracking server managed by adkd: start, stop, status, without Docker.

The server runs detached (its own session), its pid, URL and log live in a state folder so a later
`adkd server stop|status` finds it. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from adkd.errors import ConfigError, ServiceError
from adkd.platform.services.process_tree import alive, stop_on_signals, stop_tree
from adkd.platform.tracking.redaction import redact_uri
from adkd.settings import mlflow_server_env

STATE_FILE = "server.json"
LOG_FILE = "server.log"


@dataclass
class ServerState:
    pid: int
    host: str
    port: int
    backend_store_uri: str
    artifacts_destination: str
    log_path: str
    basic_auth: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the MLflow server at ``url`` answers its /health endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def read_state(state_dir: Path) -> ServerState | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return ServerState(**json.loads(path.read_text()))


def _mlflow_executable() -> str:
    beside = Path(sys.executable).with_name("mlflow")
    if beside.is_file():
        return str(beside)
    found = shutil.which("mlflow")
    if not found:
        raise ConfigError("the `mlflow` command is not installed in this environment; run `make install`")
    return found


def start_server(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    basic_auth: bool = False,
    workers: int = 1,
    wait_s: float = 90.0,
) -> ServerState:
    """Start `mlflow server` detached and wait until it answers /health."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    current = read_state(state_dir)
    if current and alive(current.pid):
        raise ConfigError(
            f"an adkd MLflow server already runs (pid {current.pid}, {current.url}); "
            f"stop it with `adkd server stop --state-dir {state_dir}`"
        )
    if not _port_free(host, port):
        raise ConfigError(f"port {port} on {host} is in use; pick another with --port")
    backend = backend_store_uri or f"sqlite:///{state_dir / 'mlflow.db'}"
    artifacts = artifacts_destination or str(state_dir / "artifacts")
    cmd = [
        _mlflow_executable(),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--workers",
        str(workers),
    ]
    if host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]
    if basic_auth:
        cmd += ["--app-name", "basic-auth"]
    log_path = state_dir / LOG_FILE
    with log_path.open("ab") as log:  # the server inherits this environment (MLflow's own variables included)
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=mlflow_server_env(),
        )
    state = ServerState(
        pid=proc.pid,
        host=host,
        port=port,
        backend_store_uri=redact_uri(backend),
        artifacts_destination=artifacts,
        log_path=str(log_path),
        basic_auth=basic_auth,
    )
    deadline = time.monotonic() + wait_s
    # Until the state file is written nothing could stop the server later: a signal now stops it too.
    with stop_on_signals() as request:
        while time.monotonic() < deadline and request.signum is None:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                msg = f"mlflow server exited with code {proc.returncode}; see {log_path}: "
                raise ServiceError(msg + " | ".join(tail))
            if healthy(state.url):
                tmp = state_dir / (STATE_FILE + ".tmp")
                tmp.write_text(json.dumps(asdict(state), indent=2))
                tmp.replace(state_dir / STATE_FILE)
                return state
            time.sleep(0.5)
        stop_tree(proc.pid, reap=proc)
    if request.signum is not None:
        raise ServiceError(f"interrupted by {signal.Signals(request.signum).name} while starting; server stopped")
    raise ServiceError(f"mlflow server did not answer on {state.url} within {wait_s:.0f}s; see {log_path}")


def _terminate(pid: int, timeout: float = 20.0) -> None:
    # The whole tree: the server's job consumers run in sessions of their own, outside its process group.
    stop_tree(pid, grace_s=timeout)


def stop_server(state_dir: Path) -> ServerState | None:
    """Stop the server recorded in ``state_dir``; None when none was recorded."""
    state = read_state(state_dir)
    if state is None:
        return None
    if alive(state.pid):
        _terminate(state.pid)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return state


def server_status(state_dir: Path) -> tuple[ServerState | None, bool, bool]:
    """(recorded state, process alive, /health answers)."""
    state = read_state(state_dir)
    if state is None:
        return None, False, False
    running = alive(state.pid)
    return state, running, running and healthy(state.url)
