"""The registry's side of a tracked run: how a finished child run's model is logged and registered.

``adkd.platform.tracking`` declares what it needs (``ModelPublisher``) and never imports the registry; whoever
opens a ``TrackingSession`` (platform.runs, the benchmark and tune commands) passes
``RegistryPublisher(settings.registered_model_name)``. A version records the data it was evaluated on (its
run's ``data_fingerprint``, data root and data set), which fair promotion reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from adkd.platform.registry.model_logging import log_onnx_model, log_pyfunc_model
from adkd.platform.registry.versions import register_version, registered_name, version_tags
from adkd.platform.tracking.run_context import dataset_name
from adkd.settings import DEFAULT_MODEL_NAME

log = logging.getLogger(__name__)


def evaluated_on(run_tags: dict[str, str]) -> dict[str, str]:
    """The data a run was evaluated on, from its tags: fingerprint, root (absolute where it is a local folder)
    and data set name."""
    data = run_tags.get("data", "")
    if data and "://" not in data and Path(data).expanduser().is_dir():
        data = str(Path(data).expanduser().resolve())
    return {
        "data_fingerprint": run_tags.get("data_fingerprint", ""),
        "data": data,
        "dataset": dataset_name(data) if data else "",
    }


class RegistryPublisher:
    """``ModelPublisher`` over MLflow: the ONNX graph and the pyfunc logged to the run, the pyfunc registered
    under the name ``name_template`` makes (``adkd-<category>`` by default)."""

    def __init__(self, name_template: str = DEFAULT_MODEL_NAME) -> None:
        self.name_template = name_template

    def log_onnx(self, onnx_path: Path, run_id: str, experiment_id: str | None) -> str:
        return log_onnx_model(onnx_path, run_id, experiment_id)

    def log_pyfunc(
        self, onnx_path: Path, run_id: str, experiment_id: str | None, int8_path: Path | None
    ) -> tuple[str, str | None]:
        info = log_pyfunc_model(onnx_path, run_id, experiment_id, int8_path)
        return info.model_uri, info.model_id

    def register(
        self,
        client: Any,
        category: str,
        *,
        source: str,
        run_id: str,
        model_id: str | None,
        config: dict[str, Any],
        preset: str | None,
        metrics: dict[str, float],
        data_tags: dict[str, str],
    ) -> tuple[str, str]:
        data = evaluated_on(data_tags)
        tags = version_tags(category, config, preset, metrics, data)
        name = registered_name(
            category,
            model=tags["model"],
            dataset=data["dataset"],
            backbone=tags["backbone"],
            preset=tags["preset"],
            template=self.name_template,
        )
        version, warning = register_version(client, name, source=source, run_id=run_id, model_id=model_id, tags=tags)
        if warning:
            log.warning("warning: %s", warning)
        return name, version
