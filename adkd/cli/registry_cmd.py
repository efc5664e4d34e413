"""`adkd registry list|promote|rollback|audit`: the adkd-<category> models and their aliases."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from adkd.errors import ConfigError
from adkd.platform.console.tables import Column, print_table

registry_app = typer.Typer(help="Registered models (adkd-<category>): list, promote, roll back.", no_args_is_help=True)
console = Console()

URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, adkd.toml, or the embedded store)."


def _settings_and_client(tracking_uri: str | None) -> tuple[Any, Any]:
    from adkd.platform.registry.versions import client_for
    from adkd.settings import load_settings

    settings = load_settings(tracking_uri=tracking_uri)
    return settings, client_for(settings.resolved_tracking_uri)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


@registry_app.command("list")
def list_cmd(
    category: str | None = typer.Option(None, "--category", "-c", help="Only adkd-<category>."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Versions, aliases, model family, key metrics and run id of each registered model."""
    from adkd.platform.registry.versions import list_versions

    _, client = _settings_and_client(tracking_uri)
    versions = list_versions(client, category)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    # Pixel columns only when some version has pixel metrics (image-level data sets have none).
    shown = [("image_auroc", "image AUROC")] + [
        (k, label)
        for k, label in (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))
        if any(k in v.metrics for v in versions)
    ]
    rank = {"image_auroc": 8, "pixel_auroc": 4, "aupro": 5}
    columns = [
        Column("model", keep=True),
        Column("version", "right", keep=True),
        Column("aliases", wrap=True, rank=9),
        Column("family", rank=6),
        Column("backbone", rank=2),
        *(Column(label, "right", rank=rank[k]) for k, label in shown),
        Column("run id", rank=1),
    ]
    rows = [
        [
            v.name,
            v.version,
            ", ".join(v.aliases),
            v.family,
            v.backbone,
            *(_pct(v.metrics.get(k)) for k, _ in shown),
            v.run_id or "",
        ]
        for v in versions
    ]
    print_table(console, "adkd registry", columns, rows, more="--json shows every field")
    if not versions:
        console.print("no registered adkd models yet: `adkd train` registers adkd-<category> after each run")


@registry_app.command("promote")
def promote_cmd(
    category: str | None = typer.Argument(None, help="The category (model adkd-<category>)."),
    version: int | None = typer.Option(None, "--version", "-v", help="Version to promote."),
    to: str = typer.Option(..., "--to", help="staging or production."),
    force: bool = typer.Option(False, "--force", help="Promote even if worse than the current holder."),
    reason: str = typer.Option("", "--reason", help="Why; kept in the audit trail."),
    all_: bool = typer.Option(False, "--all", help="Every adkd model (with --best)."),
    best: bool = typer.Option(False, "--best", help="Pick the best version by the promotion metric."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Point the staging/production alias at a version; production is gated on the promotion metric."""
    from adkd.platform.registry.versions import best_version, promote, promote_best_all

    settings, client = _settings_and_client(tracking_uri)
    metric = settings.promotion_metric
    if all_:
        if not best or category or version is not None:
            raise ConfigError("--all needs --best and no CATEGORY/--version: adkd registry promote --all --best --to X")
        results = promote_best_all(client, to, force=force, reason=reason, metric=metric, user=settings.user)
    else:
        if not category:
            raise ConfigError("name the CATEGORY to promote (or use --all --best)")
        if best == (version is not None):
            raise ConfigError("pass exactly one of --version N or --best")
        chosen = best_version(client, category, metric) if best else str(version)
        results = [promote(client, category, chosen, to, force=force, reason=reason, metric=metric, user=settings.user)]
    for r in results:
        if r.action == "unchanged":
            console.print(f"{r.name}@{r.alias} is already version {r.version}")
        else:
            forced = " (forced)" if r.forced else ""
            console.print(f"{r.name}@{r.alias}: version {r.previous or '-'} → {r.version}{forced}")


@registry_app.command("rollback")
def rollback_cmd(
    category: str = typer.Argument(..., help="The category (model adkd-<category>)."),
    alias: str = typer.Option("production", "--alias", help="Which alias to roll back."),
    reason: str = typer.Option("", "--reason", help="Why; kept in the audit trail."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Point the alias back at the version that held it before the current one."""
    from adkd.platform.registry.versions import rollback

    settings, client = _settings_and_client(tracking_uri)
    r = rollback(client, category, alias, reason=reason, user=settings.user)
    console.print(f"{r.name}@{r.alias}: version {r.previous} → {r.version} (rolled back)")


@registry_app.command("audit")
def audit_cmd(
    category: str = typer.Argument(..., help="The category (model adkd-<category>)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """The promotion / refusal / rollback history of adkd-<category>."""
    from adkd.platform.registry.versions import audit_trail

    _, client = _settings_and_client(tracking_uri)
    columns = [
        Column("time", keep=True),
        Column("action", keep=True),
        Column("alias", rank=5),
        Column("version", "right", keep=True),
        Column("previous", "right", rank=4),
        Column("user", rank=2),
        Column("forced", rank=1),
        Column("reason", wrap=True, rank=3),
    ]
    rows = [
        [
            r.get("time", ""),
            r.get("action", ""),
            r.get("alias", ""),
            str(r.get("version", "")),
            str(r.get("previous") or ""),
            r.get("user", ""),
            str(r.get("forced", "")),
            r.get("reason", ""),
        ]
        for r in audit_trail(client, category)
    ]
    print_table(console, f"adkd-{category} audit trail", columns, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
