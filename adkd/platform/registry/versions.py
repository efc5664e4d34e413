"""The model registry: registered versions, aliases as stages, gated promotion with an audit trail.

A category's versions go to the registered model the name template makes (naming.py; ``adkd-<category>``
by default). Stages are MLflow aliases (``staging``, ``production``); the deprecated stages API is never
used. Promotion to production is refused when the candidate is worse than the current holder on the
configured metric (ties broken by AUPRO) unless forced; numbers measured on different data are never
compared: both versions are re-scored on one data root first (rescoring.py). Every promotion, refusal
and rollback leaves a JSON audit tag on the model and on the version (previous holder, time, user, reason).

Concurrent promotions of one model are serialised with a lease (``registry_lock``), and both are
audited. Training registers new versions here too (``register_version``).
"""

from __future__ import annotations

import getpass
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.evaluate.metric_names import METRIC_NAMES
from adkd.platform.registry.lock import model_lock
from adkd.platform.registry.naming import (
    DATASET_TAG,
    adkd_models,
    dataset_mismatch,
    ensure_registered_model,
    registered_name,
    resolve_model,
)
from adkd.platform.registry.rescoring import Comparison, RescoreContext, compare
from adkd.platform.tracking.client import client_for
from adkd.platform.tracking.labels import latest_version_tags, version_description

# naming's and tracking's, used here and by the registry's callers
__all__ = ["client_for", "ensure_registered_model", "registered_name"]

ALIASES = ("staging", "production")
TIE_BREAK = "aupro"
PIXEL_KEYS = ("pixel_auroc", "aupro")
HISTORY_LIMIT = 50
# Registry version tags that promotion and `registry list` read.
KEY_METRICS = METRIC_NAMES  # tagged on every registered version
EVALUATION_TAGS = ("data_fingerprint", "data", DATASET_TAG)  # what a version was evaluated on


class PromotionRefused(AdkdError):
    """The candidate is worse than the current holder on the gate metric (``comparison``: the numbers)."""

    def __init__(self, message: str, comparison: Comparison | None = None) -> None:
        super().__init__(message)
        self.comparison = comparison


@dataclass
class VersionInfo:
    """One registered version as ``registry list`` shows it."""

    name: str
    category: str
    version: str
    aliases: list[str]
    family: str
    backbone: str
    metrics: dict[str, float]
    run_id: str | None
    created: str
    status: str
    dataset: str = ""
    data_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PromotionResult:
    """What a promote / rollback did; ``comparison`` holds the numbers the gate compared (None: no gate)."""

    name: str
    alias: str
    version: str
    previous: str | None
    action: str  # "promoted", "unchanged", "rolled_back"
    forced: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    previous_metrics: dict[str, float] = field(default_factory=dict)
    comparison: Comparison | None = None


# --------------------------------------------------------------------------- registration


def version_tags(
    category: str,
    config: dict[str, Any],
    preset: str | None,
    metrics: dict[str, float],
    evaluated_on: dict[str, str] | None = None,
) -> dict[str, str]:
    """The tags of a new version: what it is (category, model, backbone, preset), its key test metrics and the
    data they were measured on (``evaluated_on``: data_fingerprint, data root, dataset name)."""
    tags = {
        "category": category,
        "model": str(config.get("model", "")),
        "backbone": str(config.get("backbone") or ""),
        "preset": str(preset or config.get("preset") or ""),
    }
    tags |= {k: str(v) for k, v in (evaluated_on or {}).items() if k in EVALUATION_TAGS and v}
    for name in KEY_METRICS:
        if f"test/{name}" in metrics:
            tags[f"metric.{name}"] = repr(metrics[f"test/{name}"])
    return tags


def register_version(
    client: Any, name: str, *, source: str, run_id: str, model_id: str | None, tags: dict[str, str]
) -> tuple[str, str | None]:
    """A new version of ``name`` from a logged model; marks it latest on the model and the run.

    Returns the version and, when ``name`` already holds versions of another data set, a one-line warning.
    """
    category, dataset = tags.get("category", ""), tags.get(DATASET_TAG, "")
    ensure_registered_model(client, name, category, dataset)
    warning = dataset_mismatch(client, name, dataset)
    version = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags=tags,
        model_id=model_id,
        description=version_description(category, tags, run_id),
    )
    for key, value in latest_version_tags(str(version.version), tags).items():
        client.set_registered_model_tag(name, key, value)
    client.set_tag(run_id, "registered_model", f"{name}/{version.version}")
    return str(version.version), warning


# --------------------------------------------------------------------------- reading


def _metric_key(metric: str) -> str:
    key = metric.removeprefix("test/")
    if not key:
        raise ConfigError("promotion_metric is empty; set it to a test metric such as image_auroc")
    return key


def version_metrics(client: Any, mv: Any) -> dict[str, float]:
    """Key metrics of a version: its ``metric.*`` tags, else its run's ``test/*`` metrics."""
    out: dict[str, float] = {}
    for key, value in (mv.tags or {}).items():
        if key.startswith("metric."):
            try:
                out[key.removeprefix("metric.")] = float(value)
            except ValueError:
                continue
    if out or not mv.run_id:
        return out
    try:
        run = client.get_run(mv.run_id)
    except Exception:
        return out
    return {k.removeprefix("test/"): float(v) for k, v in run.data.metrics.items() if k.startswith("test/")}


def _get_version(client: Any, name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ConfigError(f"version {version} of '{name}' does not exist; see `adkd registry list`") from None


def _aliases_by_version(model: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return out


def _versions(client: Any, name: str) -> list[Any]:
    versions = client.search_model_versions(filter_string=f"name = '{name}'")
    return sorted(versions, key=lambda mv: int(mv.version))


def registered_models(client: Any, ref: str | None = None) -> list[Any]:
    """The registered model ``ref`` names (a name or a category: all its models), or every adkd model."""
    if not ref:
        return adkd_models(client)
    by_category = adkd_models(client, ref)
    return by_category or [resolve_model(client, ref)]


def list_versions(client: Any, ref: str | None = None) -> list[VersionInfo]:
    """Every version of the model(s) ``ref`` names (a registered name or a category), or of every adkd model."""
    out: list[VersionInfo] = []
    for model in registered_models(client, ref):
        by_version = _aliases_by_version(model)
        for mv in _versions(client, model.name):
            tags = mv.tags or {}
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
            out.append(
                VersionInfo(
                    name=model.name,
                    category=tags.get("category", (model.tags or {}).get("category", "")),
                    version=str(mv.version),
                    aliases=sorted(by_version.get(str(mv.version), [])),
                    family=tags.get("model", ""),
                    backbone=tags.get("backbone", ""),
                    metrics=version_metrics(client, mv),
                    run_id=mv.run_id,
                    created=created.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    status=str(mv.status),
                    dataset=tags.get(DATASET_TAG, ""),
                    data_fingerprint=tags.get("data_fingerprint", ""),
                )
            )
    return out


# --------------------------------------------------------------------------- gate


def gate_metric(candidate: dict[str, float], metric: str) -> str:
    """The metric promotion compares: ``metric``, or image AUROC for a model of an image-level data set.

    An image-level model has no pixel metrics at all (absent, not 0), so a pixel gate metric cannot rank it.
    """
    key = _metric_key(metric)
    image_level = not any(k in candidate for k in PIXEL_KEYS)
    return "image_auroc" if image_level and key in PIXEL_KEYS else key


def gate_key(metrics: dict[str, float], metric: str) -> tuple[float, float]:
    """What promotion compares: (gate metric, AUPRO); missing values count as -inf."""

    def value(name: str) -> float:
        v = metrics.get(name)
        return float(v) if v is not None and math.isfinite(float(v)) else -math.inf

    return value(_metric_key(metric)), value(TIE_BREAK)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    shown = [f"{k}={metrics[k]:.4f}" for k in KEY_METRICS if k in metrics]
    return ", ".join(shown) or "no metrics"


# --------------------------------------------------------------------------- audit


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _user(user: str | None) -> str:
    return user or getpass.getuser()


def _audit(client: Any, name: str, version: str | None, record: dict[str, Any]) -> None:
    """The record as ``audit.<time>.<id>`` on the model and ``audit.<alias>.<time>`` on the version."""
    stamp = record["time"].replace(":", "").replace("-", "")
    value = json.dumps(record, sort_keys=True)
    client.set_registered_model_tag(name, f"audit.{stamp}.{uuid.uuid4().hex[:6]}", value)
    if version is not None:
        client.set_model_version_tag(name, version, f"audit.{record['alias']}.{stamp}", value)


def _history(model: Any, alias: str) -> list[str]:
    try:
        return [str(v) for v in json.loads((model.tags or {}).get(f"{alias}.history", "[]"))]
    except ValueError:
        return []


def audit_trail(client: Any, ref: str) -> list[dict[str, Any]]:
    """Every audit record of the registered model ``ref`` names (a name or a category), oldest first."""
    return audit_records(resolve_model(client, ref))


def audit_records(model: Any) -> list[dict[str, Any]]:
    """The audit records in a registered model's tags, oldest first."""
    records = [json.loads(v) for k, v in (model.tags or {}).items() if k.startswith("audit.")]
    return sorted(records, key=lambda r: r.get("time", ""))


# --------------------------------------------------------------------------- actions


def _fair_numbers(
    client: Any,
    name: str,
    versions: dict[str, Any],
    data_of: str,
    context: RescoreContext | None,
) -> Comparison:
    """The numbers ``versions`` are ranked by: stored ones on the same data, re-scored ones otherwise."""
    stored = {v: version_metrics(client, mv) for v, mv in versions.items()}
    return compare(client, name, versions, stored, data_of, context)


def promote(
    client: Any,
    ref: str,
    version: str | int,
    alias: str = "production",
    *,
    force: bool = False,
    reason: str = "",
    metric: str = "image_auroc",
    user: str | None = None,
    rescore: RescoreContext | None = None,
    comparison: Comparison | None = None,
) -> PromotionResult:
    """Point ``alias`` of the model ``ref`` names at ``version``; for production, only if it is not worse
    than the holder on numbers measured on the same data (re-scored through ``rescore`` where they were not).

    ``comparison``: numbers already measured for these versions (``--best``); ``user`` goes into the audit
    trail (default: the login name). Raises ``ComparisonUnavailable`` where a fair comparison cannot be made.
    """
    if alias not in ALIASES:
        raise ConfigError(f"--to {alias}: choose one of {', '.join(ALIASES)}")
    resolved = resolve_model(client, ref)
    name = resolved.name
    candidate = _get_version(client, name, version)
    cand = str(candidate.version)
    gated = alias == "production" and not force
    holder = (resolved.aliases or {}).get(alias)
    if gated and holder is not None and str(holder) != cand:
        covered = comparison is not None and {cand, str(holder)} <= set(comparison.stored)
        if not covered:
            # Measured before taking the lock: re-scoring may outlast the lock's lease.
            versions = {cand: candidate, str(holder): _get_version(client, name, holder)}
            comparison = _fair_numbers(client, name, versions, cand, rescore)
    with model_lock(client, name):
        model = client.get_registered_model(name)
        previous = (model.aliases or {}).get(alias)
        previous = str(previous) if previous is not None else None
        if previous == cand:
            # --best: the numbers that picked it, which are worth showing even when nothing changes.
            return PromotionResult(
                name,
                alias,
                previous,
                previous,
                "unchanged",
                metrics=version_metrics(client, candidate),
                comparison=comparison,
            )
        record = {
            "action": "promote",
            "alias": alias,
            "version": cand,
            "previous": previous,
            "time": _now(),
            "user": _user(user),
            "reason": reason,
            "forced": force,
        }
        if gated and previous is not None:
            if comparison is None or previous not in comparison.stored:  # the holder changed meanwhile
                versions = {cand: candidate, previous: _get_version(client, name, previous)}
                comparison = _fair_numbers(client, name, versions, cand, rescore)
            cand_metrics, prev_metrics = comparison.metrics(cand), comparison.metrics(previous)
            key = gate_metric(cand_metrics, metric)
            record |= {"metric": _metric_key(key), **comparison.record()}
            if gate_key(cand_metrics, key) < gate_key(prev_metrics, key):
                _audit(client, name, cand, {**record, "action": "refused"})
                where = f" re-scored on {comparison.data}" if comparison.was_rescored else ""
                raise PromotionRefused(
                    f"{name} version {cand} ({_fmt_metrics(cand_metrics)}) is worse than production version "
                    f"{previous} ({_fmt_metrics(prev_metrics)}){where} on {_metric_key(key)} (ties by {TIE_BREAK}); "
                    "pass --force to promote anyway",
                    comparison,
                )
        else:
            cand_metrics = version_metrics(client, candidate)
            prev_metrics = version_metrics(client, _get_version(client, name, previous)) if previous else {}
        client.set_registered_model_alias(name, alias, cand)
        history = [*_history(model, alias), cand][-HISTORY_LIMIT:]
        client.set_registered_model_tag(name, f"{alias}.history", json.dumps(history))
        client.set_registered_model_tag(name, f"{alias}.previous", previous or "")
        _audit(client, name, cand, record)
    return PromotionResult(name, alias, cand, previous, "promoted", force, cand_metrics, prev_metrics, comparison)


def best_version(
    client: Any, ref: str, metric: str = "image_auroc", rescore: RescoreContext | None = None
) -> tuple[str, Comparison]:
    """The version with the best (metric, AUPRO), the newest winning a full tie, and the numbers that ranked it.

    Versions evaluated on different data are ranked on numbers re-scored on the newest version's evaluation
    data (or ``rescore.data``), the rule a promotion follows.
    """
    name = resolve_model(client, ref).name
    ready = {str(mv.version): mv for mv in _versions(client, name) if str(mv.status) == "READY"}
    if not ready:
        raise ConfigError(f"{name} has no ready versions; train the category first")
    newest = max(ready, key=int)
    comparison = _fair_numbers(client, name, ready, newest, rescore)
    best = max(ready, key=lambda v: (*gate_key(comparison.metrics(v), metric), int(v)))
    return best, comparison


def promote_best_all(
    client: Any,
    alias: str = "production",
    *,
    force: bool = False,
    reason: str = "",
    metric: str = "image_auroc",
    user: str | None = None,
    rescore: RescoreContext | None = None,
) -> list[PromotionResult]:
    """For every adkd model, promote its best version to ``alias``."""
    out = []
    for model in registered_models(client):
        version, comparison = best_version(client, model.name, metric, rescore)
        out.append(
            promote(
                client,
                model.name,
                version,
                alias,
                force=force,
                reason=reason or "best version",
                metric=metric,
                user=user,
                rescore=rescore,
                comparison=comparison,
            )
        )
    return out


def rollback(
    client: Any, ref: str, alias: str = "production", reason: str = "", user: str | None = None
) -> PromotionResult:
    """Point ``alias`` back at the version that held it before the current one."""
    name = resolve_model(client, ref).name
    with model_lock(client, name):
        model = client.get_registered_model(name)
        current = (model.aliases or {}).get(alias)
        if current is None:
            raise ConfigError(f"nobody holds {name}@{alias}; nothing to roll back")
        history = _history(model, alias)
        while history and history[-1] == str(current):
            history.pop()
        existing = {str(mv.version) for mv in _versions(client, name)}
        while history and history[-1] not in existing:
            history.pop()
        if not history:
            raise ConfigError(
                f"{name}@{alias} (version {current}) has no earlier holder to roll back to; "
                "promote a version explicitly instead"
            )
        target = history[-1]
        client.set_registered_model_alias(name, alias, target)
        client.set_registered_model_tag(name, f"{alias}.history", json.dumps(history))
        client.set_registered_model_tag(name, f"{alias}.previous", str(current))
        record = {
            "action": "rollback",
            "alias": alias,
            "version": target,
            "previous": str(current),
            "time": _now(),
            "user": _user(user),
            "reason": reason,
            "forced": False,
        }
        _audit(client, name, target, record)
    return PromotionResult(name, alias, target, str(current), "rolled_back")
