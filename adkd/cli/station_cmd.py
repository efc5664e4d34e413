"""`adkd station`: the web page for the line, over the registry's models; every verdict logged."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def station(
    models: list[str] = typer.Argument(
        None,
        help="CATEGORY, CATEGORY@ALIAS or CATEGORY/VERSION; a registered name in place of CATEGORY where it has "
        "several (default: every category with a --alias version).",
    ),
    alias: str = typer.Option("production", "--alias", help="Registry alias served for a bare CATEGORY."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; anything but loopback needs ADKD_STATION_TOKEN."
    ),
    port: int = typer.Option(8200, "--port", help="Port of the station's page."),
    watch: list[str] = typer.Option(
        None, "--watch", help="[CATEGORY=]FOLDER that a camera writes into: new images are inspected (repeatable)."
    ),
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml (\\[station], tracking_uri, ...)."),
) -> None:
    """Serve the inspection page: upload or drop images (or watch a folder), see verdicts and heatmaps."""
    from adkd.platform.station.server import StationPlan, build_station, check_bind, parse_watch, serve
    from adkd.platform.tracking.redaction import redact_uri
    from adkd.settings import load_settings

    settings = load_settings(config_file)
    token = settings.station.token.get_secret_value() if settings.station.token else None
    check_bind(host, token)  # before anything is loaded or listens
    watches = [parse_watch(w) for w in watch or []]
    station_ = build_station(settings, list(models or []), alias)
    table = Table(title="adkd station serves")
    for col in ("category", "model", "version", "from", "threshold", "validation normals"):
        table.add_column(col)
    for category in sorted(station_.models):
        m = station_.models[category]
        table.add_row(
            escape(category), m.name, m.version, escape(str(m.spec)), f"{m.threshold:.4g}", str(len(m.normal_scores))
        )
    console.print(table)
    console.print(
        f"verdicts: {redact_uri(station_.log.url)}  kept images: {escape(station_.store.description)}", highlight=False
    )
    for w in watches:
        console.print(f"watching {escape(str(w.folder))}", highlight=False)
    plan = StationPlan(station_, host, port, token, watches)

    def ready(url: str) -> None:
        auth = " (access token required)" if token else ""
        console.print(f"station: {url}{auth}  (Ctrl-C to stop)", highlight=False)

    serve(plan, settings, on_ready=ready, on_event=lambda line: console.print(escape(line), highlight=False))


def register(app: typer.Typer) -> None:
    app.command("station")(station)
