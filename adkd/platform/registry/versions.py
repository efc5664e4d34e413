"""The model registry: ``adkd-<category>`` models, aliases as stages, gated promotion with an audit trail.

Stages are MLflow aliases (``staging``, ``production``); the deprecated stages API is never used.
Promotion to production is refused when the candidate is worse than the current holder on the
configured metric (ties broken by AUPRO) unless forced. Every promotion, refusal and rollback leaves
a JSON audit tag on the model and on the version (previous holder, time, user, reason).

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

from adkd.errors import AdkdError, ConfigError, ServiceError
from adkd.pipelines.evaluate.metric_names import METRIC_NAMES
from adkd.platform.registry.lock import model_lock
from adkd.platform.tracking.labels import latest_version_tags, model_description, version_description

ALIASES = ("staging", "production")
TIE_BREAK = "aupro"
PIXEL_KEYS = ("pixel_auroc", "aupro")
HISTORY_LIMIT = 50
# Registry version tags that promotion and `registry list` read.
KEY_METRICS = METRIC_NAMES  # tagged on every registered version


class PromotionRefused(AdkdError):
    """The candidate is worse than the current holder on the gate metric."""


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PromotionResult:
    """What a promote / rollback did."""

    name: str
    alias: str
    version: str
    previous: str | None
    action: str  # "promoted", "unchanged", "rolled_back"
    forced: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    previous_metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- naming and registration


def registered_name(category: str) -> str:
    """The registered model of a category: ``adkd-<category>``."""
    return f"adkd-{category}"


def ensure_registered_model(client: Any, name: str, category: str) -> None:
    """Create ``name`` (tagged and described) unless it exists; a racing creator is not an error."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException:
        pass
    try:
        client.create_registered_model(
            name,
            tags={"category": category, "managed_by": "adkd"},
            description=model_description(category),
        )
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise


def version_tags(
    category: str, config: dict[str, Any], preset: str | None, metrics: dict[str, float]
) -> dict[str, str]:
    """The tags of a new version: what it is (category, model, backbone, preset) and its key test metrics."""
    tags = {
        "category": category,
        "model": str(config.get("model", "")),
        "backbone": str(config.get("backbone") or ""),
        "preset": str(preset or config.get("preset") or ""),
    }
    for name in KEY_METRICS:
        if f"test/{name}" in metrics:
            tags[f"metric.{name}"] = repr(metrics[f"test/{name}"])
    return tags


def register_version(
    client: Any, category: str, *, source: str, run_id: str, model_id: str | None, tags: dict[str, str]
) -> str:
    """A new version of ``adkd-<category>`` from a logged model; marks it latest on the model and the run."""
    name = registered_name(category)
    ensure_registered_model(client, name, category)
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
    return str(version.version)


# --------------------------------------------------------------------------- reading


def client_for(tracking_uri: str) -> Any:
    """An MlflowClient on ``tracking_uri`` (registry on the same store), after a reachability check."""
    from mlflow import MlflowClient

    from adkd.platform.tracking.client import check_reachable, configure_http_env

    configure_http_env()
    check_reachable(tracking_uri)
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


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


def _get_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise ConfigError(
                f"registered model '{name}' does not exist; train that category first (adkd train) "
                "or check `adkd registry list`"
            ) from None
        raise ServiceError(f"MLflow registry error for '{name}': {str(exc).splitlines()[0]}") from None


def _get_version(client: Any, name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ConfigError(
            f"version {version} of '{name}' does not exist; see `adkd registry list --category "
            f"{name.removeprefix('adkd-')}`"
        ) from None


def _aliases_by_version(model: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return out


def _versions(client: Any, name: str) -> list[Any]:
    versions = client.search_model_versions(filter_string=f"name = '{name}'")
    return sorted(versions, key=lambda mv: int(mv.version))


def registered_models(client: Any, category: str | None = None) -> list[Any]:
    if category:
        return [_get_model(client, registered_name(category))]
    models = client.search_registered_models(filter_string="name LIKE 'adkd-%'")
    return sorted(models, key=lambda m: m.name)


def list_versions(client: Any, category: str | None = None) -> list[VersionInfo]:
    """Every version of ``adkd-<category>`` (or of every adkd model), oldest first."""
    out: list[VersionInfo] = []
    for model in registered_models(client, category):
        by_version = _aliases_by_version(model)
        for mv in _versions(client, model.name):
            tags = mv.tags or {}
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
            out.append(
                VersionInfo(
                    name=model.name,
                    category=tags.get("category", model.name.removeprefix("adkd-")),
                    version=str(mv.version),
                    aliases=sorted(by_version.get(str(mv.version), [])),
                    family=tags.get("model", ""),
                    backbone=tags.get("backbone", ""),
                    metrics=version_metrics(client, mv),
                    run_id=mv.run_id,
                    created=created.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    status=str(mv.status),
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


def audit_trail(client: Any, category: str) -> list[dict[str, Any]]:
    """Every audit record of ``adkd-<category>``, oldest first."""
    model = _get_model(client, registered_name(category))
    records = [json.loads(v) for k, v in (model.tags or {}).items() if k.startswith("audit.")]
    return sorted(records, key=lambda r: r.get("time", ""))


# --------------------------------------------------------------------------- actions


def promote(
    client: Any,
    category: str,
    version: str | int,
    alias: str = "production",
    *,
    force: bool = False,
    reason: str = "",
    metric: str = "image_auroc",
    user: str | None = None,
) -> PromotionResult:
    """Point ``alias`` at ``version``; for production, only if it is not worse than the holder.

    ``user`` goes into the audit trail (default: the login name).
    """
    if alias not in ALIASES:
        raise ConfigError(f"--to {alias}: choose one of {', '.join(ALIASES)}")
    name = registered_name(category)
    _get_model(client, name)
    candidate = _get_version(client, name, version)
    cand_metrics = version_metrics(client, candidate)
    with model_lock(client, name):
        model = client.get_registered_model(name)
        previous = (model.aliases or {}).get(alias)
        previous = str(previous) if previous is not None else None
        prev_metrics: dict[str, float] = {}
        metric = gate_metric(cand_metrics, metric)
        record = {
            "action": "promote",
            "alias": alias,
            "version": str(candidate.version),
            "previous": previous,
            "time": _now(),
            "user": _user(user),
            "reason": reason,
            "forced": force,
            "metric": _metric_key(metric),
        }
        if previous == str(candidate.version):
            return PromotionResult(name, alias, previous, previous, "unchanged", metrics=cand_metrics)
        if previous is not None:
            prev_metrics = version_metrics(client, _get_version(client, name, previous))
        gated = alias == "production" and previous is not None and not force
        if gated and gate_key(cand_metrics, metric) < gate_key(prev_metrics, metric):
            _audit(client, name, str(candidate.version), {**record, "action": "refused"})
            raise PromotionRefused(
                f"{name} version {candidate.version} ({_fmt_metrics(cand_metrics)}) is worse than production "
                f"version {previous} ({_fmt_metrics(prev_metrics)}) on {_metric_key(metric)} "
                f"(ties by {TIE_BREAK}); pass --force to promote anyway"
            )
        client.set_registered_model_alias(name, alias, str(candidate.version))
        history = [*_history(model, alias), str(candidate.version)][-HISTORY_LIMIT:]
        client.set_registered_model_tag(name, f"{alias}.history", json.dumps(history))
        client.set_registered_model_tag(name, f"{alias}.previous", previous or "")
        _audit(client, name, str(candidate.version), record)
    return PromotionResult(name, alias, str(candidate.version), previous, "promoted", force, cand_metrics, prev_metrics)


def best_version(client: Any, category: str, metric: str = "image_auroc") -> str:
    """The version with the best (metric, AUPRO); the newest wins a full tie."""
    infos = [v for v in list_versions(client, category) if v.status == "READY"]
    if not infos:
        raise ConfigError(f"{registered_name(category)} has no ready versions; train the category first")
    best = max(infos, key=lambda v: (*gate_key(v.metrics, metric), int(v.version)))
    return best.version


def promote_best_all(
    client: Any,
    alias: str = "production",
    *,
    force: bool = False,
    reason: str = "",
    metric: str = "image_auroc",
    user: str | None = None,
) -> list[PromotionResult]:
    """For every adkd model, promote its best version to ``alias``."""
    out = []
    for model in registered_models(client):
        category = model.name.removeprefix("adkd-")
        version = best_version(client, category, metric)
        out.append(
            promote(
                client, category, version, alias, force=force, reason=reason or "best version", metric=metric, user=user
            )
        )
    return out


def rollback(
    client: Any, category: str, alias: str = "production", reason: str = "", user: str | None = None
) -> PromotionResult:
    """Point ``alias`` back at the version that held it before the current one."""
    name = registered_name(category)
    _get_model(client, name)
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
