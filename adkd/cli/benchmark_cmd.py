"""`adkd benchmark GRID`: a grid of models x categories x settings, trained at once on Ray and ranked."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from adkd.cli import resource_flags, tracking_flags

if TYPE_CHECKING:
    from adkd.platform.benchmark.report import BenchmarkReport

console = Console()


def _list_grids() -> None:
    from adkd.platform.benchmark.grid import grid_summary, load_grid, shipped_grids

    table = Table(title="grids shipped with adkd (run one: adkd benchmark NAME --data ROOT)")
    table.add_column("name")
    table.add_column("what")
    for name in shipped_grids():
        table.add_row(name, grid_summary(load_grid(name)))
    console.print(table)


def _categories(text: str | None) -> list[str] | None:
    from adkd.errors import ConfigError

    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ConfigError("--categories is empty; write e.g. --categories bottle,cable")
    return names


def _summary_table(report) -> Table:
    from adkd.platform.benchmark.report import QUALITY

    best = report.best()
    table = Table(title=f"{report.title or report.grid}: mean over categories (best per category by {report.metric})")
    for col in ("row", "model", *(label for _, label in QUALITY), "minutes", "run", "best in"):
        table.add_column(col, justify="left" if col in ("row", "model", "best in") else "right")
    for row in report.rows:
        values = []
        for metric, _ in QUALITY:
            value = report.mean(row.label, metric)
            values.append("-" if value is None else f"{100 * value:.1f}")
        minutes = report.mean(row.label, "minutes")
        table.add_row(
            row.label,
            row.model,
            *values,
            "-" if minutes is None else f"{minutes:.1f}",
            f"{report.finished(row.label)}/{len(report.categories)}",
            ", ".join(c for c in report.categories if best[c] == row.label),
        )
    return table


def benchmark(
    grid: str | None = typer.Argument(None, help="A grid file (YAML/TOML) or the name of a shipped grid."),
    list_: bool = typer.Option(False, "--list", help="Name the grids shipped with adkd and exit."),
    data: str | None = typer.Option(None, "--data", "-d", help="Data root (default: the grid's)."),
    categories: str | None = typer.Option(None, "--categories", help="Comma-separated; default: the grid's."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs of every run (scales a paper grid down)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size of every run."),
    backbone: str | None = typer.Option(None, "--backbone", help="Teacher backbone of every run."),
    weights: str | None = typer.Option(None, "--weights", help="Teacher weights: imagenet, none or a file."),
    set_: list[str] = typer.Option([], "--set", "-s", help="key=value applied to every row, after the grid's."),
    metric: str | None = typer.Option(
        None, "--metric", help="Best row per category by image_auroc (default), pixel_auroc or aupro; ties by AUPRO."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default the run's folder)."),
    register: str | None = typer.Option(
        None, "--register", help="'best': register the best row's model of each category (one version each)."
    ),
    promote: str | None = typer.Option(None, "--promote", help="With --register best: staging or production."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster (default RAY_ADDRESS or embedded)."),
    workers_per_run: int | None = resource_flags.WORKERS_PER_RUN,
    cpus_per_worker: float | None = resource_flags.CPUS_PER_WORKER,
    gpus_per_worker: float | None = resource_flags.GPUS_PER_WORKER,
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs of the embedded local Ray."),
    max_failures: int = typer.Option(2, "--max-failures", help="Restarts of a run after a crash (from checkpoint)."),
    storage: str | None = typer.Option(None, "--storage", help="Run storage: a shared path or s3://bucket/prefix."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Write no MLflow runs."),
    experiment_name: str | None = tracking_flags.EXPERIMENT_NAME,
    run_name: str | None = tracking_flags.RUN_NAME,
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml settings file."),
    cpus_per_run: float | None = resource_flags.old_name("--cpus-per-run"),
    gpus_per_run: float | None = resource_flags.old_name("--gpus-per-run"),
) -> None:
    """Train a grid of models x categories x settings at once and rank the rows per category."""
    from adkd.cli.live_board import LiveBoard
    from adkd.errors import ConfigError
    from adkd.platform.benchmark.grid import Overrides
    from adkd.platform.benchmark.runner import run_benchmark

    if list_:
        _list_grids()
        return
    if grid is None:
        raise ConfigError("name a GRID (a file or a shipped grid; `adkd benchmark --list` names them)")
    overrides = Overrides(
        data=data,
        categories=_categories(categories),
        epochs=epochs,
        image_size=image_size,
        backbone=backbone,
        weights=weights,
        sets=list(set_),
    )
    with LiveBoard(console, title="adkd benchmark") as board:
        outcome = run_benchmark(
            grid,
            overrides,
            metric=metric,
            plan=resource_flags.ray_plan(
                address=address,
                workers_per_run=workers_per_run,
                cpus_per_worker=resource_flags.pick(
                    cpus_per_worker, "--cpus-per-worker", {"--cpus-per-run": cpus_per_run}
                ),
                gpus_per_worker=resource_flags.pick(
                    gpus_per_worker, "--gpus-per-worker", {"--gpus-per-run": gpus_per_run}
                ),
                max_failures=max_failures,
                storage=storage,
                num_cpus=num_cpus,
            ),
            tracking=not no_tracking,
            register=register,
            promote=promote,
            out=out,
            command="adkd " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else "",
            listeners=[board],
            config_file=config_file,
            experiment_name=experiment_name,
            run_name=run_name,
        )
    report = outcome.report
    console.print(_summary_table(report))
    for line in unfinished_lines(report):
        console.print(line, highlight=False)
    for row in report.rows:
        for category in report.categories:
            cell = report.cells[row.label][category]
            if cell.registered_version:
                promoted = f", {cell.promoted}" if cell.promoted else ""
                name = cell.registered_name or f"adkd-{category}"
                console.print(f"registered {name} version {cell.registered_version} ({row.label}){promoted}")
    if report.deviations:
        console.print("differs from the paper's settings: " + "; ".join(report.deviations), highlight=False)
    console.print(f"report: {outcome.paths['md']}, {outcome.paths['json'].name}, {outcome.paths['html'].name}")
    if outcome.tracking_message:
        console.print(outcome.tracking_message)
    if outcome.failed:
        raise typer.Exit(1)


def unfinished_lines(report: BenchmarkReport, shown: int = 10) -> list[str]:
    """A line per run that failed or did not run, at most ``shown`` of them; the report files list every one."""
    lines = [
        f"[yellow]{row.label} / {category} {cell.status.lower()}:[/] {cell.reason}"
        for row in report.rows
        for category in report.categories
        if (cell := report.cells[row.label][category]).status != "FINISHED"
    ]
    if len(lines) > shown:
        return [*lines[:shown], f"... {len(lines) - shown} more did not finish: the report lists every run"]
    return lines


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
