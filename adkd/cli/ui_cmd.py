"""`adkd ui`: the MLflow UI on 127.0.0.1 over the configured tracking store."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from rich.console import Console

from adkd.errors import ServiceError
from adkd.platform.services.process_tree import run_until_stopped

console = Console()


def ui(
    port: int = typer.Option(5000, "--port", help="Port of the UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1 keeps it on this machine)."),
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml with tracking_uri / runs_dir."),
) -> None:
    """Start `mlflow ui` over the configured store and print its URL (Ctrl-C, SIGTERM or SIGHUP stop it all)."""
    from adkd.platform.tracking.client import is_remote
    from adkd.platform.tracking.redaction import redact_uri
    from adkd.settings import load_settings

    settings = load_settings(config_file)
    uri = settings.resolved_tracking_uri
    if is_remote(uri):
        # A tracking server serves its own UI.
        console.print(f"MLflow UI: {redact_uri(uri)}")
        return
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
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
    ]
    console.print(f"MLflow UI: http://{host}:{port}  (store {uri}; Ctrl-C to stop)", highlight=False)
    try:
        code, stopped_by = run_until_stopped(cmd)
    except OSError as exc:
        raise ServiceError(
            f"cannot start `mlflow ui` ({exc.strerror}); is mlflow installed in this environment?"
        ) from None
    if stopped_by is not None:
        # Ctrl-C is the normal way out; SIGTERM/SIGHUP exit as a killed process would, after cleaning up.
        raise typer.Exit(0 if stopped_by == signal.SIGINT else 128 + stopped_by)
    if code != 0:
        raise ServiceError(f"`mlflow ui` exited with code {code}; is port {port} free? try --port")


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
