"""`adkd benchmark`: every (row, category) of a grid trained at once through the multi-category Ray path.

The jobs go to ``ray_driver.run_all_categories`` keyed ``<row>--<category>`` (so one category can train under
several rows), with the same resources, failure isolation and restarts as ``adkd train --all-categories``.
Tracking is one MLflow parent run (command ``benchmark``) with a child run per job, tagged with its row;
no child registers a model by itself. Afterwards the report is written and logged to the parent run, and
with ``register="best"`` the best row's model of each category is registered (one version per category)
and, with ``promote``, promoted through the registry's gate.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.evaluate.metric_names import QUALITY_METRICS, logged_key
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.benchmark.grid import Job, Overrides, build_jobs, deviations, load_grid
from adkd.platform.benchmark.report import NOT_RUN, BenchmarkReport, Cell, ReportRow
from adkd.platform.cluster.listeners import RunListener

if TYPE_CHECKING:
    from adkd.platform.runs import RayPlan

log = logging.getLogger(__name__)

REGISTER_CHOICES = ("best",)
PROMOTE_CHOICES = ("staging", "production")
REPORT_ARTIFACT_DIR = "benchmark"


@dataclass
class BenchmarkOutcome:
    report: BenchmarkReport
    paths: dict[str, Path]
    failed: list[str] = field(default_factory=list)  # job keys that ran and failed
    not_run: list[str] = field(default_factory=list)
    tracking_message: str | None = None


@functools.cache
def _tracker_class() -> type:
    """``CategoryTracker`` plus the row (built on first use: tracking imports MLflow)."""
    from adkd.platform.tracking.category_run import CategoryTracker

    class RowTracker(CategoryTracker):
        """A child run of one (row, category): the category's tracker plus the row's label in tags and name."""

        def __init__(self, context: Any, job: Job) -> None:
            super().__init__(context, job.category, preset=job.config.preset if job.config else None)
            self.row = job.row

        def on_start(self, config: dict[str, Any]) -> None:
            started = self._started
            super().on_start(config)
            if started:
                return
            client, handle, row, category = self.context.client, self.handle, self.row, self.category

            def tag() -> None:
                run_id = handle.require_run_id()
                client.set_tag(run_id, "benchmark_row", row)
                client.set_tag(run_id, "mlflow.runName", f"{row}-{category}")

            self.context.writer.submit(f"row tags of {row}/{category}", tag)

    return RowTracker


class BenchmarkListener(RunListener):
    """A ``RunListener`` over a TrackingSession: one child per job key; registration is left to the runner."""

    def __init__(self, session: Any, jobs: dict[str, Job]) -> None:
        self.session = session
        self.jobs = jobs
        self.trackers: dict[str, Any] = {}
        self.results: list[TrainResult] = []

    def start(self, configs: dict[str, TrainConfig]) -> None:
        if self.session.parent_run_id is None:
            self.session.start_parent()

    def callback(self, key: str) -> TrainCallback:
        tracker = _tracker_class()(self.session.child_context(), self.jobs[key])
        self.session.children[key] = tracker
        self.trackers[key] = tracker
        return tracker

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        self.results = list(results)
        return {}


def _cell(result: TrainResult) -> Cell:
    metrics = result.metrics
    if result.status != "FINISHED":
        return Cell(status="FAILED", reason=result.error or "training did not finish", minutes=result.duration_s / 60)
    return Cell(
        status="FINISHED",
        image_auroc=_finite(metrics.get("test/image_auroc")),
        pixel_auroc=_finite(metrics.get("test/pixel_auroc")),
        aupro=_finite(metrics.get("test/aupro")),
        minutes=result.duration_s / 60.0,
        ms_per_image=_finite(metrics.get("test/ms_per_image")),
        epochs_run=result.epochs_run,
    )


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def check_requests(register: str | None, promote: str | None, tracking: bool, off: str = "--no-tracking") -> None:
    """--register/--promote make sense together and only with tracking (``off``: what turned it off); checked before
    any work."""
    if register is not None and register not in REGISTER_CHOICES:
        raise ConfigError(f"--register {register}: the only choice is 'best' (the best row's model per category)")
    if promote is not None and promote not in PROMOTE_CHOICES:
        raise ConfigError(f"--promote {promote}: choose staging or production")
    if promote is not None and register is None:
        raise ConfigError("--promote needs --register best: only registered versions can be promoted")
    if register is not None and not tracking:
        raise ConfigError(f"--register needs MLflow tracking, which {off} turns off")


def nothing_to_run(grid: str, reasons: list[str], shown: int = 3) -> str:
    """One line for a grid none of whose runs can start: its distinct reasons, most frequent first, with counts."""
    counts = Counter(reasons)
    parts = [f"{reason} ({n} of {len(reasons)} runs)" for reason, n in counts.most_common(shown)]
    more = f"; and {len(counts) - shown} more reasons" if len(counts) > shown else ""
    return f"no run of grid '{grid}' can start: {'; '.join(parts)}{more}"


def run_benchmark(
    grid_spec: str,
    overrides: Overrides,
    *,
    metric: str | None = None,
    plan: RayPlan | None = None,
    tracking: bool = True,
    register: str | None = None,
    promote: str | None = None,
    out: Path | None = None,
    command: str = "",
    listeners: Sequence[RunListener] = (),
    config_file: Path | None = None,
    experiment_name: str | None = None,
    run_name: str | None = None,
) -> BenchmarkOutcome:
    """Train every job of the grid on Ray, write the report; register/promote the best rows when asked.

    ``listeners`` (e.g. the CLI's live table) receive every job's events besides MLflow tracking.
    """
    from adkd.platform.cluster.driver import new_run_id
    from adkd.platform.runs import RayPlan, run_settings, train_configs

    plan = plan or RayPlan()
    address = plan.address

    settings = run_settings(config_file, ray_address=address, experiment=experiment_name)
    off = "--no-tracking" if not tracking else "ADKD_TRACKING=off"  # what turned tracking off, when it is
    tracking = tracking and settings.tracking  # ADKD_TRACKING=off: no MLflow run at all, as for train and tune
    check_requests(register, promote, tracking, off)
    grid = load_grid(grid_spec)
    metric = metric or grid.metric
    if metric not in QUALITY_METRICS:
        raise ConfigError(f"--metric {metric}: choose image_auroc, pixel_auroc or aupro")
    address = address or settings.ray_address
    rows, categories, jobs = build_jobs(
        grid, overrides, settings_train=settings.train, out_dir=str(settings.runs_dir), local=not address
    )
    data = overrides.data or grid.data or ""
    runnable = [j for j in jobs if j.runnable]
    if not runnable:  # known before any run, report or MLflow run is made: one line, exit 2
        raise ConfigError(nothing_to_run(grid.name, [j.reason or "" for j in jobs]))
    by_key = {j.key: j for j in jobs}

    session: Any = None
    sink: BenchmarkListener | None = None
    if tracking:
        from adkd.platform.registry.publishing import RegistryPublisher
        from adkd.platform.tracking.session import TrackingSession

        session = TrackingSession.from_settings(
            settings,
            data,
            command="benchmark",
            publisher=RegistryPublisher(settings.registered_model_name),
            register=False,
            params={
                "grid": grid.name,
                "metric": metric,
                "categories": ",".join(categories),
                "overrides": {k: v for k, v in asdict(overrides).items() if v not in (None, [])},
            },
            tags={"benchmark": grid.name, "mode": "benchmark", "categories": ",".join(categories)},
            run_name=run_name,
        )
        sink = BenchmarkListener(session, by_key)

    started = time.monotonic()
    run_id = new_run_id()
    try:
        outcome = train_configs(
            [j.config for j in runnable],  # type: ignore[misc]
            settings,
            plan,
            [*listeners, *([sink] if sink is not None else [])],
            keys=[j.key for j in runnable],
            run_id=run_id,
        )
    except BaseException as exc:  # the parent run must not stay RUNNING (e.g. Ray could not start)
        if session is not None and session.writer is not None:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            session.finish(status="FAILED", error=lines[-1] if lines else type(exc).__name__)
        raise
    results = dict(zip((j.key for j in runnable), outcome.results, strict=True))
    run_dir = outcome.run_dir

    cells: dict[str, dict[str, Cell]] = {r.label: {} for r in rows}
    for job in jobs:
        if job.key in results:
            cell = _cell(results[job.key])
            if sink is not None and job.key in sink.trackers:
                cell.run_id = sink.trackers[job.key].handle.run_id
        else:
            cell = Cell(status=NOT_RUN, reason=job.reason)
        cells[job.row][job.category] = cell

    report = BenchmarkReport(
        grid=grid.name,
        title=grid.title,
        data=data,
        metric=metric,
        rows=[ReportRow(r.label, r.model, r.preset, r.sets, r.paper) for r in rows],
        categories=categories,
        cells=cells,
        paper_source=grid.paper_source,
        paper_notes=grid.paper_notes,
        deviations=deviations(jobs),
        grid_categories=list(grid.categories),
        run={"run_id": run_id, "command": command, "address": address or "local"},
    )
    message = None
    if session is not None:
        if register == "best":
            _register_best(report, sink, by_key, session)  # type: ignore[arg-type]
            if promote:
                _promote_best(report, session, promote, grid.name, settings)
        report.run["mlflow_parent_run_id"] = session.parent_run_id
        report.run["mlflow_experiment"] = session.experiment
    report.run["wall_s"] = time.monotonic() - started
    paths = report.write(Path(out) if out is not None else run_dir)
    if session is not None:
        client, parent = session.client, session.parent_run_id
        for path in paths.values():
            session.writer.submit(
                f"report {path.name}", lambda p=path: client.log_artifact(parent, str(p), REPORT_ARTIFACT_DIR)
            )
        summary = session.finish()
        message = summary.message
    return BenchmarkOutcome(
        report=report,
        paths=paths,
        failed=[k for k, r in results.items() if r.status != "FINISHED"],
        not_run=[j.key for j in jobs if not j.runnable],
        tracking_message=message,
    )


def _register_best(report: BenchmarkReport, sink: BenchmarkListener, jobs: dict[str, Job], session: Any) -> None:
    """Register the best row's model of each category: one version of adkd-<category> each."""
    keys = {(j.row, j.category): k for k, j in jobs.items()}
    wanted = {}
    for category, label in report.best().items():
        if label is None:
            continue
        tracker = sink.trackers.get(keys[(label, category)])
        if tracker is None or tracker.status != "FINISHED":
            continue
        cell = report.cells[label][category]
        metrics = {logged_key(m): v for m in QUALITY_METRICS if (v := cell.value(m)) is not None}
        tracker.register(metrics)  # queued after the run's model upload on the session's writer
        wanted[category] = tracker
    if wanted and not session.writer.flush(session.flush_timeout_s):
        log.warning("MLflow did not confirm every registration in %.0f s", session.flush_timeout_s)
    for category, tracker in wanted.items():
        cell = report.cells[tracker.row][category]
        cell.registered_version = tracker.handle.registered_version
        cell.registered_name = tracker.handle.registered_name


def _promote_best(report: BenchmarkReport, session: Any, alias: str, grid: str, settings: Any) -> None:
    """Promote each registered best version through the registry's gate (versions evaluated on other data are
    re-scored on the benchmark's); a refusal is reported, not raised."""
    from adkd.platform.registry.rescoring import RescoreContext
    from adkd.platform.registry.versions import promote

    rescore = RescoreContext(settings.resolved_tracking_uri, settings.cache_dir, settings.s3_endpoint_url)
    for category, label in report.best().items():
        if label is None:
            continue
        cell = report.cells[label][category]
        if cell.registered_version is None:
            continue
        try:
            result = promote(
                session.client,
                cell.registered_name or category,
                cell.registered_version,
                alias,
                reason=f"best row '{label}' of benchmark {grid}",
                metric=report.metric,
                user=settings.user,
                rescore=rescore,
            )
            cell.promoted = f"{alias}: {result.action} (was {result.previous or '-'})"
        except AdkdError as exc:
            cell.promoted = f"{alias}: refused: {exc}"
