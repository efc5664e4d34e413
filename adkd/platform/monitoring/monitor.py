"""One monitoring pass: the verdict log's recent rows of one category against the served version's normals.

The version compared is the one behind the newest verdict (or ``version``); verdicts of other versions in
the window are counted and left out. The reference (threshold, quantile, validation normal scores) is what
the station recorded when it served that version, i.e. what the model file carries. The pass can be logged
as an MLflow run in the ``adkd-monitoring`` experiment, linked to the registered version both ways (tags
on the run, ``monitor.*`` tags on the version, the metrics on the version's logged model).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from adkd.errors import ConfigError, DataError
from adkd.platform.monitoring.statistics import Bucket, Check, Stats, checks, measure, over_time

EXPERIMENT = "adkd-monitoring"
METRIC_PREFIX = "monitor/"


class VerdictSource(Protocol):
    """What monitoring reads: the station's verdict log (``adkd.platform.station.log.VerdictLog``)."""

    url: str

    def verdicts(self, category: str, since: datetime | None = None) -> list[dict[str, Any]]: ...

    def model(self, name: str, version: str) -> dict[str, Any] | None: ...


def utcnow() -> datetime:
    """Now in UTC, naive, as the verdict log stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class MonitorOutcome:
    """What one pass found."""

    category: str
    model_name: str
    model_version: str
    since: datetime
    until: datetime
    stats: Stats
    checks: list[Check]
    buckets: list[Bucket]
    normals: list[float]
    scores: list[float]
    threshold: float
    quantile: float | None
    normal_source: str
    other_versions: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    report_path: Path | None = None

    @property
    def crossed(self) -> list[Check]:
        return [c for c in self.checks if c.crossed]

    def summary(self) -> str:
        if self.crossed:
            return "bound crossed: " + "; ".join(c.describe() for c in self.crossed)
        return "within bounds"


def monitor_category(
    log: VerdictSource,
    category: str,
    bounds: Any,
    *,
    since: datetime | None = None,
    version: str | None = None,
) -> MonitorOutcome:
    """Measure the recent verdicts of ``category`` (since ``since``, default the settings' window)."""
    until = utcnow()
    since = since or until - timedelta(hours=bounds.window_hours)
    rows = log.verdicts(category, since)
    if not rows:
        raise DataError(
            f"no verdicts of category {category!r} since {since:%Y-%m-%d %H:%M} UTC in {log.url.split('?')[0]}; "
            "inspect images with `adkd station` first (or widen the window with --hours)"
        )
    if version is None:
        version = str(rows[-1]["model_version"])
    mine = [r for r in rows if str(r["model_version"]) == version]
    if not mine:
        seen = ", ".join(sorted({str(r["model_version"]) for r in rows}))
        raise DataError(f"no verdicts of {category} version {version} in the window (versions seen: {seen})")
    name = str(mine[-1]["model_name"])
    reference = log.model(name, version)
    if reference is None:
        raise ConfigError(
            f"the station database holds no reference for {name} v{version}; serve it once with `adkd station`"
        )
    normals = [float(s) for s in reference.get("normal_scores") or []]
    threshold = float(reference["threshold"])
    quantile = reference.get("quantile")
    stats = measure(mine, normals, threshold, quantile, bounds.psi_max)
    others = Counter(str(r["model_version"]) for r in rows if str(r["model_version"]) != version)
    return MonitorOutcome(
        category=category,
        model_name=name,
        model_version=version,
        since=since,
        until=until,
        stats=stats,
        checks=checks(stats, bounds),
        buckets=over_time(mine, normals),
        normals=normals,
        scores=[float(r["score"]) for r in mine],
        threshold=threshold,
        quantile=quantile,
        normal_source=str(reference.get("normal_source") or ""),
        other_versions=dict(others),
    )


def log_run(outcome: MonitorOutcome, tracking_uri: str, artifact_location: str | None = None) -> str:
    """An MLflow run with the pass's metrics (and the time series), linked to the registered version."""
    import time

    from mlflow.entities import Metric, RunTag

    from adkd.platform.tracking.client import client_for, ensure_experiment, is_remote

    client = client_for(tracking_uri)
    try:
        mv = client.get_model_version(outcome.model_name, outcome.model_version)
    except Exception:
        mv = None
    model_id = getattr(mv, "model_id", None) if mv is not None else None
    experiment = ensure_experiment(client, EXPERIMENT, None if is_remote(tracking_uri) else artifact_location)
    experiment_id = experiment.experiment_id
    stamp = f"{outcome.until:%Y%m%d-%H%M%S}"
    tags = {
        "category": outcome.category,
        "registered_model": outcome.model_name,
        "model_version": outcome.model_version,
        "model_uri": f"models:/{outcome.model_name}/{outcome.model_version}",
        "window_start": f"{outcome.since:%Y-%m-%dT%H:%M:%S}Z",
        "window_end": f"{outcome.until:%Y-%m-%dT%H:%M:%S}Z",
        "crossed": ",".join(c.name for c in outcome.crossed),
        "status": "bound crossed" if outcome.crossed else "ok",
    }
    if mv is not None and mv.run_id:
        tags["model_run_id"] = mv.run_id
    run = client.create_run(experiment_id, run_name=f"monitor-{outcome.category}-v{outcome.model_version}-{stamp}")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(f"{METRIC_PREFIX}{k}", v, now, 0, model_id=model_id) for k, v in outcome.stats.metrics().items()]
    for step, bucket in enumerate(outcome.buckets):
        at = int(bucket.end.timestamp() * 1000)
        series = {
            "flag_rate_over_time": bucket.flag_rate,
            "mean_normalized_score_over_time": bucket.mean_normalized_score,
            "latency_p50_ms_over_time": bucket.latency_p50_ms,
            "latency_p99_ms_over_time": bucket.latency_p99_ms,
        }
        if bucket.ks_statistic is not None:
            series["ks_statistic_over_time"] = bucket.ks_statistic
        metrics += [Metric(f"{METRIC_PREFIX}{k}", float(v), at, step) for k, v in series.items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    if outcome.report_path is not None and outcome.report_path.is_file():
        client.log_artifact(run_id, str(outcome.report_path))
    client.set_terminated(run_id)
    if mv is not None:
        client.set_model_version_tag(outcome.model_name, outcome.model_version, "monitor.last_run_id", run_id)
        client.set_model_version_tag(outcome.model_name, outcome.model_version, "monitor.status", tags["status"])
        client.set_model_version_tag(
            outcome.model_name, outcome.model_version, "monitor.crossed", tags["crossed"] or "none"
        )
    outcome.run_id = run_id
    return run_id
