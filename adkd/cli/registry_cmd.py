"""`adkd registry list|promote|rollback|audit`: adkd's registered models and their aliases.

A MODEL argument is a registered name (``adkd-bottle``) or a category (``bottle``) that has one registered
model. Promotion prints the numbers it compared: stored ones where both versions were evaluated on the same
data, otherwise both versions re-scored on one data root (and which one).
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from adkd.errors import ConfigError
from adkd.pipelines.evaluate.metric_names import METRIC_LABELS
from adkd.platform.console.tables import Column, print_table

registry_app = typer.Typer(
    help="Registered models (adkd-<category> by default): list, promote, roll back.", no_args_is_help=True
)
console = Console(markup=False)  # names, paths and --set lines are text: "[openvino]" is not a style tag

URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, adkd.toml, or the embedded store)."
MODEL_HELP = "A registered model name (adkd-bottle) or a category with one registered model (bottle)."


def _settings_and_client(tracking_uri: str | None) -> tuple[Any, Any]:
    from adkd.platform.registry.versions import client_for
    from adkd.settings import load_settings

    settings = load_settings(tracking_uri=tracking_uri)
    return settings, client_for(settings.resolved_tracking_uri)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


@registry_app.command("list")
def list_cmd(
    category: str | None = typer.Option(
        None, "--category", "-c", help="Only the models of this category (or this registered model)."
    ),
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
    shown = [("image_auroc", METRIC_LABELS["image_auroc"])] + [
        (k, METRIC_LABELS[k]) for k in ("pixel_auroc", "aupro") if any(k in v.metrics for v in versions)
    ]
    rank = {"image_auroc": 8, "pixel_auroc": 4, "aupro": 5}
    columns = [
        Column("model", keep=True),
        Column("version", "right", keep=True),
        Column("aliases", wrap=True, rank=9),
        Column("family", rank=6),
        Column("backbone", rank=2),
        Column("data set", rank=3),
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
            v.dataset,
            *(_pct(v.metrics.get(k)) for k, _ in shown),
            v.run_id or "",
        ]
        for v in versions
    ]
    print_table(console, "adkd registry", columns, rows, more="--json shows every field")
    if not versions:
        console.print("no registered adkd models yet: `adkd train` registers a version after each run")


def _print_comparison(comparison: Any, versions: list[str]) -> None:
    """Both sets of numbers: what each version stored (and on which data), and what re-scoring measured."""
    shown = [
        (k, label)
        for k, label in METRIC_LABELS.items()
        if any(k in m for m in (*comparison.stored.values(), *comparison.rescored.values()))
    ]
    columns = [
        Column("version", "right", keep=True),
        Column("numbers", keep=True),
        Column("data", wrap=True, rank=9),
        *(Column(label, "right", rank=5) for _, label in shown),
    ]
    rows = []
    for v in versions:
        on = comparison.evaluated_on[v]
        rows.append(
            [
                v,
                "stored",
                f"{on.dataset or on.data or '?'} ({on.short})",
                *(_pct(comparison.stored[v].get(k)) for k, _ in shown),
            ]
        )
        if comparison.was_rescored:
            rescored = comparison.rescored[v]
            rows.append(
                [
                    v,
                    "re-scored",
                    f"{comparison.data} ({comparison.fingerprint[:12]})",
                    *(_pct(rescored.get(k)) for k, _ in shown),
                ]
            )
    print_table(console, f"{comparison.name}: {comparison.reason}", columns, rows)
    if comparison.was_rescored:
        console.print(
            f"compared on the re-scored numbers: both models scored on {comparison.data} "
            f"(data {comparison.fingerprint[:12]}), test split",
            highlight=False,
            soft_wrap=True,
        )


@registry_app.command("promote")
def promote_cmd(
    model: str | None = typer.Argument(None, metavar="MODEL", help=MODEL_HELP),
    version: int | None = typer.Option(None, "--version", "-v", help="Version to promote."),
    to: str = typer.Option(..., "--to", help="staging or production."),
    force: bool = typer.Option(
        False, "--force", help="Promote even if worse than the current holder, or when they cannot be compared."
    ),
    reason: str = typer.Option("", "--reason", help="Why; kept in the audit trail."),
    all_: bool = typer.Option(False, "--all", help="Every adkd model (with --best)."),
    best: bool = typer.Option(False, "--best", help="Pick the best version by the promotion metric."),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Re-score the versions on this data root (folder or s3://) before comparing. Default: versions "
        "evaluated on different data are re-scored on the candidate's evaluation data.",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Point the staging/production alias at a version; production is gated on the promotion metric.

    Numbers measured on different data are not compared: both versions are re-scored on one data root first.
    """
    from adkd.platform.registry.rescoring import ComparisonUnavailable, RescoreContext
    from adkd.platform.registry.versions import PromotionRefused, best_version, promote, promote_best_all

    settings, client = _settings_and_client(tracking_uri)
    metric = settings.promotion_metric
    rescore = RescoreContext(settings.resolved_tracking_uri, settings.cache_dir, settings.s3_endpoint_url, data)
    try:
        if all_:
            if not best or model or version is not None:
                raise ConfigError(
                    "--all needs --best and no MODEL/--version: adkd registry promote --all --best --to X"
                )
            results = promote_best_all(
                client, to, force=force, reason=reason, metric=metric, user=settings.user, rescore=rescore
            )
        else:
            if not model:
                raise ConfigError("name the MODEL (registered name or category) to promote, or use --all --best")
            if best == (version is not None):
                raise ConfigError("pass exactly one of --version N or --best")
            comparison = None
            if best:
                chosen, comparison = best_version(client, model, metric, rescore)
            else:
                chosen = str(version)
            results = [
                promote(
                    client,
                    model,
                    chosen,
                    to,
                    force=force,
                    reason=reason,
                    metric=metric,
                    user=settings.user,
                    rescore=rescore,
                    comparison=comparison,
                )
            ]
    except PromotionRefused as exc:
        if exc.comparison is not None:
            _print_comparison(exc.comparison, list(exc.comparison.stored))
        raise
    except ComparisonUnavailable as exc:
        raise ComparisonUnavailable(
            f"{exc} (promotion refused: numbers from different data are not compared)"
        ) from None
    for r in results:
        if r.comparison is not None:
            _print_comparison(r.comparison, [r.version, *(v for v in r.comparison.stored if v != r.version)])
        if r.action == "unchanged":
            console.print(f"{r.name}@{r.alias} is already version {r.version}", highlight=False)
        else:
            forced = " (forced)" if r.forced else ""
            console.print(f"{r.name}@{r.alias}: version {r.previous or '-'} → {r.version}{forced}", highlight=False)


@registry_app.command("rollback")
def rollback_cmd(
    model: str = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
    alias: str = typer.Option("production", "--alias", help="Which alias to roll back."),
    reason: str = typer.Option("", "--reason", help="Why; kept in the audit trail."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """Point the alias back at the version that held it before the current one."""
    from adkd.platform.registry.versions import rollback

    settings, client = _settings_and_client(tracking_uri)
    r = rollback(client, model, alias, reason=reason, user=settings.user)
    console.print(f"{r.name}@{r.alias}: version {r.previous} → {r.version} (rolled back)")


@registry_app.command("audit")
def audit_cmd(
    model: str = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=URI_HELP),
) -> None:
    """The promotion / refusal / rollback history of a registered model."""
    from adkd.platform.registry.naming import resolve_model
    from adkd.platform.registry.versions import audit_records

    _, client = _settings_and_client(tracking_uri)
    resolved = resolve_model(client, model)
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
        for r in audit_records(resolved)
    ]
    print_table(console, f"{resolved.name} audit trail", columns, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
