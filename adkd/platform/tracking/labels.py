"""What MLflow's UI shows about adkd: the kind of its experiments, and the description and tags of its models.

MLflow 3's UI picks an experiment's view from the ``mlflow.experimentKind`` tag; an untagged experiment
with no runs yet is taken for GenAI development (traces, judges, prompts). adkd's experiments hold
training runs, so they are marked ``custom_model_development`` (the UI's "machine learning" kind).
"""

from __future__ import annotations

from typing import Any

from adkd.pipelines.evaluate.metric_names import METRIC_LABELS

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
METRIC_NAMES = METRIC_LABELS


def experiment_tags() -> dict[str, str]:
    """Tags every experiment adkd creates carries."""
    return {EXPERIMENT_KIND_TAG: TRAINING_KIND}


def mark_training_experiment(client: Any, experiment: Any) -> None:
    """Tag an existing experiment as model training unless it already has a kind (a user's choice stands)."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def model_description(category: str) -> str:
    """The registered model's description (the registry page shows it under the name)."""
    return (
        f"adkd anomaly detector for category '{category}': an ONNX graph in a pyfunc that takes base64 PNG/JPEG "
        "images (column 'image') and returns image scores and anomaly maps. The tags model, backbone and "
        "metric.* describe the latest registered version; each version carries its own. "
        "Stages are the aliases staging and production (adkd registry promote)."
    )


def _metrics_text(metrics: dict[str, float]) -> str:
    shown = [f"{label} {100 * metrics[key]:.2f}%" for key, label in METRIC_NAMES.items() if key in metrics]
    return ", ".join(shown) or "no test metrics"


def version_description(category: str, tags: dict[str, str], run_id: str) -> str:
    """One paragraph for a model version from its tags: what was trained, and how it scored on the test split."""
    metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    family = tags.get("model") or "model"
    backbone = f" on {tags['backbone']}" if tags.get("backbone") else ""
    preset = f", preset {tags['preset']}" if tags.get("preset") else ""
    return f"{family}{backbone}{preset} for '{category}'; test split: {_metrics_text(metrics)}. Run {run_id}."


def latest_version_tags(version: str, tags: dict[str, str]) -> dict[str, str]:
    """Registered-model tags that mirror the latest version (category, model, backbone, metric.*)."""
    keep = {k: v for k, v in tags.items() if k in ("category", "model", "backbone") or k.startswith("metric.")}
    return {**keep, "latest_version": version}
