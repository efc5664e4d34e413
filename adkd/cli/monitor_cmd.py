"""`adkd monitor CATEGORY`: production scores against the validation normals; exit 1 when a bound is crossed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adkd.errors import ConfigError, ServiceError, first_line

console = Console()
err_console = Console(stderr=True)
BOUND_CROSSED = 1  # exit status for cron/CI; 2 stays the one of user errors


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO time; write e.g. 2026-05-01T08:00:00Z") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def monitor(
    category: str = typer.Argument(..., help="Category whose logged verdicts are checked."),
    version: str | None = typer.Option(None, "--version", help="Registered version (default: the newest verdict's)."),
    hours: float | None = typer.Option(
        None, "--hours", help="Window: the last N hours (default monitor.window_hours)."
    ),
    since: str | None = typer.Option(None, "--since", help="Window start as an ISO time (UTC unless it says)."),
    report: Path | None = typer.Option(None, "--report", help="HTML report path (default adkd-runs/monitoring/...)."),
    tracking: bool = typer.Option(True, "--tracking/--no-tracking", help="Log the pass as an MLflow run."),
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml (\\[monitor] bounds, \\[station])."),
) -> None:
    """Drift (KS, PSI), flag rate vs the threshold's rate, confirmed FP/FN, latency; exit 1 naming a crossed bound."""
    from adkd.platform.monitoring.monitor import log_run, monitor_category
    from adkd.platform.monitoring.report import write_report
    from adkd.platform.station.log import VerdictLog, default_url
    from adkd.settings import load_settings

    settings = load_settings(config_file)
    bounds = settings.monitor if hours is None else settings.monitor.model_copy(update={"window_hours": hours})
    if hours is not None and hours <= 0:
        raise ConfigError(f"--hours {hours}: use a positive number of hours")
    log = VerdictLog(settings.station.db_url or default_url(settings.runs_dir), create=False)
    try:
        outcome = monitor_category(log, category, bounds, since=_since(since), version=version)
    finally:
        log.close()
    path = report or settings.runs_dir / "monitoring" / category / f"report-v{outcome.model_version}.html"
    write_report(outcome, path)
    s = outcome.stats
    table = Table(title=escape(f"monitor {category}: {outcome.model_name} v{outcome.model_version}, {s.n} verdicts"))
    for col in ("statistic", "value", "bound", "status"):
        table.add_column(col)
    for c in outcome.checks:
        value = "n/a" if c.value is None else f"{c.value:.4g}"
        bound = ("≥ " if c.direction == "min" else "≤ ") + f"{c.bound:g}"
        status = (
            f"[dim]not checked: {escape(c.why_not)}[/]"
            if not c.checked
            else ("[bold red]CROSSED[/]" if c.crossed else "[green]ok[/]")
        )
        table.add_row(c.name, value, bound, status)
    console.print(table)
    rate = "n/a" if s.flag_rate is None else f"{100 * s.flag_rate:.1f}%"
    expected = "n/a" if s.expected_flag_rate is None else f"{100 * s.expected_flag_rate:.1f}%"
    console.print(
        f"flagged {s.flagged} of {s.n} ({rate}; expected at the threshold {expected}); feedback: "
        f"{s.false_alarms} false alarm(s) of {s.flagged_with_feedback}, {s.misses} miss(es) of "
        f"{s.passed_with_feedback}; latency p50 {s.latency_p50_ms:.1f} ms, p99 {s.latency_p99_ms:.1f} ms",
        highlight=False,
    )
    if outcome.other_versions:
        left = ", ".join(f"{n} of v{v}" for v, n in sorted(outcome.other_versions.items()))
        console.print(f"left out (other versions): {left}", highlight=False)
    console.print(f"report: {path}", highlight=False)
    tracking_error = None
    if tracking and settings.tracking:
        try:
            run_id = log_run(outcome, settings.resolved_tracking_uri, settings.resolved_artifact_location)
            console.print(f"MLflow monitoring run {run_id} (experiment adkd-monitoring)", highlight=False)
        except Exception as exc:  # the checks' verdict still stands; say why it was not logged
            tracking_error = f"the monitoring run was not logged to MLflow: {first_line(exc)}"
    if outcome.crossed:
        names = ", ".join(c.name for c in outcome.crossed)
        err_console.print(
            f"monitor: {category} v{outcome.model_version}: {names} crossed its bound: {outcome.summary()}",
            highlight=False,
            soft_wrap=True,
        )
        if tracking_error:
            err_console.print(tracking_error, highlight=False)
        raise typer.Exit(BOUND_CROSSED)
    if tracking_error:
        raise ServiceError(tracking_error)
    console.print(f"[green]within bounds[/]: {sum(c.checked for c in outcome.checks)} of {len(outcome.checks)} checked")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
