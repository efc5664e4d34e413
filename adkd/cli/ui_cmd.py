"""`adkd ui`: the MLflow UI on 127.0.0.1 over the configured tracking store, and links straight to the runs."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console

from adkd.errors import AdkdError, ServiceError, first_line
from adkd.platform.services.process_tree import run_until_stopped

console = Console(markup=False)  # names, paths and --set lines are text: "[openvino]" is not a style tag
READY_TIMEOUT_S = 300.0


def _links(uri: str, base: str, landing: bool) -> list[str]:
    """Lines naming the runs of the recent experiments and the registered models, each with its link (one line
    saying why when the store cannot be read: the UI's address is printed all the same)."""
    from mlflow.exceptions import MlflowException

    from adkd.platform.services.mlflow_ui import landing_link, recent_experiments, runs_target
    from adkd.platform.tracking.client import client_for
    from adkd.platform.tracking.redaction import redact_uri

    try:
        experiments, total = recent_experiments(client_for(uri))
    except (AdkdError, MlflowException) as exc:
        return [f"  runs not listed: {first_line(exc).replace(uri, redact_uri(uri))}"]
    lines = []
    for e in experiments:
        link = landing_link(base, e.experiment_id) if landing else f"{base}/{runs_target(e.experiment_id)}"
        lines.append(f"  runs of {e.name}: {link}")
    if total > len(experiments):
        lines.append(f"  ({total - len(experiments)} more experiments: {base}/#/experiments)")
    if not experiments:
        lines.append("  no runs yet: `adkd train` logs them here")
    models = landing_link(base) if landing else f"{base}/#/models"
    lines.append(f"  registered models: {models}")
    return lines


def _announce_when_ready(url: str, lines: list[str], stop: threading.Event) -> None:
    from adkd.platform.services.mlflow_server import healthy

    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if healthy(url, timeout=1.0):
            console.print("\n".join([f"ready at {url}", *lines]), highlight=False, soft_wrap=True)
            return
        stop.wait(0.5)


def _relay_output(read_fd: int, debug: bool) -> None:
    from adkd.platform.services.mlflow_ui import relay

    with os.fdopen(read_fd, "r", errors="replace") as stream:
        relay(stream, lambda line: (sys.stderr.write(line), sys.stderr.flush()), debug)


def ui(
    port: int = typer.Option(5000, "--port", help="Port of the UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1 keeps it on this machine)."),
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml with tracking_uri / runs_dir."),
) -> None:
    """Start the MLflow UI over the configured store and print links to the runs and registered models.

    The links open the training runs (not MLflow's GenAI overview) in any browser. Ctrl-C, SIGTERM or SIGHUP
    stop it all.
    """
    from adkd.platform.console.quiet import debug_requested
    from adkd.platform.services.mlflow_ui import APP_NAME
    from adkd.platform.tracking.client import is_remote
    from adkd.platform.tracking.redaction import redact_uri
    from adkd.settings import load_settings, mlflow_server_env

    settings = load_settings(config_file)
    uri = settings.resolved_tracking_uri
    if is_remote(uri):
        # A tracking server serves its own UI (without adkd's landing page: its links carry the view instead).
        base = redact_uri(uri).rstrip("/")
        console.print(f"MLflow UI: {base}", highlight=False)
        console.print("\n".join(_links(uri, base, landing=False)), highlight=False, soft_wrap=True)
        return
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    lines = _links(uri, url, landing=True)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        settings.resolved_artifact_location,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        # One person's browser: one process (its threads serve the page's parallel requests). Each more worker is
        # a process that imports MLflow at start (3.3 CPU-s here) and serves nobody else.
        "1",
        "--app-name",
        APP_NAME,
        "--uvicorn-opts",
        "--log-level warning",
    ]
    console.print(f"MLflow UI: {url}  (store {uri}; Ctrl-C to stop)", highlight=False, soft_wrap=True)
    read_fd, write_fd = os.pipe()
    relay = threading.Thread(target=_relay_output, args=(read_fd, debug_requested()), daemon=True)
    relay.start()
    ready = threading.Event()
    announcer = threading.Thread(target=_announce_when_ready, args=(url, lines, ready), daemon=True)
    announcer.start()
    try:
        code, stopped_by = run_until_stopped(cmd, stdout=write_fd, stderr=write_fd, env=mlflow_server_env())
    except OSError as exc:
        raise ServiceError(
            f"cannot start `mlflow ui` ({exc.strerror}); is mlflow installed in this environment?"
        ) from None
    finally:
        ready.set()
        os.close(write_fd)
        relay.join(timeout=5)
    if stopped_by is not None:
        # Ctrl-C is the normal way out; SIGTERM/SIGHUP exit as a killed process would, after cleaning up.
        raise typer.Exit(0 if stopped_by == signal.SIGINT else 128 + stopped_by)
    if code != 0:
        raise ServiceError(f"`mlflow ui` exited with code {code}; is port {port} free? try --port")


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
