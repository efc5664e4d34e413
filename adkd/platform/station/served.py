"""Which registered version answers for a category, loaded through the same predictor as ``adkd.load``.

A spec is ``CATEGORY`` (the default alias, ``production``), ``CATEGORY@ALIAS`` or ``CATEGORY/VERSION``; CATEGORY is
found as ``adkd registry`` finds it: the category's one registered model (whatever name ``registered_model_name``
made), or a registered name. Without specs, every adkd registered model with a version under the alias is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.platform.registry.naming import registered_name, resolve_model

DEFAULT_ALIAS = "production"
_SPEC = re.compile(r"^(?P<category>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))?$")


@dataclass(frozen=True)
class ModelSpec:
    """What the operator asked to serve for one category."""

    category: str  # as parsed: a category or a registered name, until ``resolve_specs`` sets the model's category
    alias: str | None = DEFAULT_ALIAS
    version: str | None = None
    name: str | None = None  # the registered model; None: not resolved (registry offline), adkd-<category>

    @property
    def reference(self) -> str:
        name = self.name or registered_name(self.category)
        return f"models:/{name}/{self.version}" if self.version else f"models:/{name}@{self.alias}"

    def __str__(self) -> str:
        return f"{self.category}/{self.version}" if self.version else f"{self.category}@{self.alias}"


def parse_spec(text: str, default_alias: str = DEFAULT_ALIAS) -> ModelSpec:
    match = _SPEC.match(text.strip())
    if not match:
        raise ConfigError(
            f"model {text!r} is not understood; write CATEGORY, CATEGORY@ALIAS or CATEGORY/VERSION "
            "(e.g. disc@staging), a registered name in place of CATEGORY where the category has several"
        )
    if match["version"]:
        return ModelSpec(match["category"], None, match["version"])
    return ModelSpec(match["category"], match["alias"] or default_alias)


@dataclass
class ServedModel:
    """A loaded version: predictor, registry facts and monitoring reference."""

    spec: ModelSpec
    category: str
    name: str
    version: str
    predictor: Any
    metrics: dict[str, float] = field(default_factory=dict)
    family: str = ""
    backbone: str = ""
    preset: str = ""
    run_id: str | None = None
    normal_scores: list[float] = field(default_factory=list)
    normal_source: str = ""
    quantile: float | None = None

    @property
    def threshold(self) -> float:
        return float(self.predictor.image_threshold)

    @property
    def heat_range(self) -> tuple[float, float]:
        """The map's colour scale (``Predictor.heat_range``)."""
        return self.predictor.heat_range

    def reference_entry(self) -> dict[str, Any]:
        """The row the verdict log keeps for monitoring."""
        return {
            "name": self.name,
            "version": self.version,
            "category": self.category,
            "family": self.family,
            "preset": self.preset,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "normal_source": self.normal_source,
            "normal_scores": self.normal_scores,
            "metrics": self.metrics,
            "run_id": self.run_id,
        }


def _category(model: Any) -> str:
    # The model's tag: a name template may say more than adkd-<category>.
    return (model.tags or {}).get("category") or model.name.removeprefix("adkd-")


def discover(client: Any, alias: str = DEFAULT_ALIAS) -> list[ModelSpec]:
    """Every adkd registered model with a version under ``alias``."""
    from adkd.platform.registry.versions import registered_models

    found = [m for m in registered_models(client) if alias in (m.aliases or {})]
    return [ModelSpec(_category(m), alias, name=m.name) for m in found]


def resolve_specs(client: Any, specs: list[ModelSpec]) -> list[ModelSpec]:
    """Each spec with its registered model, found as ``adkd registry`` finds it, and that model's category."""
    out = []
    for spec in specs:
        model = resolve_model(client, spec.category)
        out.append(replace(spec, category=_category(model), name=model.name))
    return out


def _registry_facts(client: Any, name: str, version: str) -> dict[str, Any]:
    """Metrics, family, backbone and run of a registered version; empty when the registry cannot be asked."""
    if client is None:
        return {}
    try:
        from adkd.platform.registry.versions import version_metrics

        mv = client.get_model_version(name, version)
    except Exception:  # offline: the model file's own metadata still says enough
        return {}
    tags = mv.tags or {}
    return {
        "metrics": version_metrics(client, mv),
        "family": tags.get("model", ""),
        "backbone": tags.get("backbone", ""),
        "preset": tags.get("preset", ""),
        "run_id": mv.run_id,
    }


def load_model(
    spec: ModelSpec, tracking_uri: str, cache_dir: Path, runtime: str = "auto", client: Any = None
) -> ServedModel:
    """Resolve ``spec`` in the registry and open its ONNX file with ``open_predictor`` (``client``: the registry's,
    for the version's facts; None: offline, the file's own metadata says enough)."""
    from adkd.pipelines.predict.runtimes import open_predictor
    from adkd.platform.registry.resolve import resolve_onnx

    path, origin = resolve_onnx(spec.reference, tracking_uri, cache_dir)
    predictor = open_predictor(path, runtime=runtime)
    meta = predictor.meta
    category = str(meta.get("category") or spec.category)
    if category != spec.category:
        raise ConfigError(
            f"{spec.reference} is a model of category {category!r}, not {spec.category!r}; check the registry"
        )
    facts = _registry_facts(client, origin["name"], origin["version"])
    # The served file's own test metrics first: runtime=auto may run an int8 or OpenVINO variant, which records
    # its own; the registry's metric.* tags are the fp32 run's (the same numbers when the fp32 file is served).
    own = {k.removeprefix("test/"): float(v) for k, v in (meta.get("metrics") or {}).items() if k.startswith("test/")}
    metrics = own or facts.get("metrics") or {}
    normals = meta.get("normal_scores") or {}
    return ServedModel(
        spec=spec,
        category=category,
        name=origin["name"],
        version=str(origin["version"]),
        predictor=predictor,
        metrics=metrics,
        family=facts.get("family") or str(meta.get("model") or ""),
        backbone=facts.get("backbone") or str(meta.get("backbone") or ""),
        preset=facts.get("preset") or "",
        run_id=facts.get("run_id"),
        normal_scores=[float(s) for s in normals.get("scores") or []],
        normal_source=str(normals.get("source") or (meta.get("thresholds_fitted_on") or {}).get("source") or ""),
        quantile=float(normals["quantile"]) if normals.get("quantile") is not None else None,
    )
