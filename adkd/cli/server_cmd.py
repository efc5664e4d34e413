"""`adkd server start|stop|status`: a production-like MLflow tracking server on this box."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

server_app = typer.Typer(help="Run an MLflow tracking server (SQLite or PostgreSQL, local or S3 artifacts).")
console = Console()
STATE_DIR_HELP = "Folder holding the server's pid, log and (by default) its SQLite store and artifacts."


def _default_state_dir() -> Path:
    from adkd.settings import load_settings

    return load_settings().runs_dir / "server"


@server_app.command("start")
def start(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(5000, help="Port to listen on."),
    backend_store_uri: str = typer.Option(
        None, help="postgresql://user@host/db or sqlite:///path.db (default: SQLite in the state folder)."
    ),
    artifacts_destination: str = typer.Option(
        None, help="Where artifacts go: a local folder or s3://bucket/prefix (default: the state folder)."
    ),
    basic_auth: bool = typer.Option(False, help="Require MLflow basic-auth logins (mlflow's basic-auth app)."),
    state_dir: Path = typer.Option(None, help=STATE_DIR_HELP),
) -> None:
    """Start the server in the background and print its URL."""
    from adkd.platform.services.mlflow_server import start_server

    state = start_server(
        state_dir or _default_state_dir(),
        host=host,
        port=port,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        basic_auth=basic_auth,
    )
    console.print(f"MLflow server running at [bold]{state.url}[/] (pid {state.pid}, log {state.log_path})")
    console.print(f"Point adkd at it: export MLFLOW_TRACKING_URI={state.url}")


@server_app.command("stop")
def stop(state_dir: Path = typer.Option(None, help=STATE_DIR_HELP)) -> None:
    """Stop the server started by `adkd server start`."""
    from adkd.platform.services.mlflow_server import stop_server

    state = stop_server(state_dir or _default_state_dir())
    console.print("no adkd MLflow server recorded" if state is None else f"stopped server pid {state.pid}")


@server_app.command("status")
def status(state_dir: Path = typer.Option(None, help=STATE_DIR_HELP)) -> None:
    """Say whether the server runs and answers; exit code 1 when it does not."""
    from adkd.platform.services.mlflow_server import server_status

    state, alive, ok = server_status(state_dir or _default_state_dir())
    if state is None:
        console.print("no adkd MLflow server recorded")
        raise typer.Exit(1)
    word = "healthy" if ok else ("running, not answering" if alive else "not running")
    console.print(f"{state.url}: {word} (pid {state.pid}, backend {state.backend_store_uri})")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
