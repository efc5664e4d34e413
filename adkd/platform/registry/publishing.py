"""The registry's side of a tracked run: how a finished child run's model is logged and registered.

``adkd.platform.tracking`` declares what it needs (``ModelPublisher``) and never imports the registry; whoever
opens a ``TrackingSession`` (platform.runs, the benchmark and tune commands) passes ``RegistryPublisher()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.platform.registry.model_logging import log_onnx_model, log_pyfunc_model
from adkd.platform.registry.versions import register_version, registered_name, version_tags


class RegistryPublisher:
    """``ModelPublisher`` over MLflow: the ONNX graph and the pyfunc logged to the run, ``adkd-<category>``
    registered from the pyfunc."""

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
    ) -> tuple[str, str]:
        tags = version_tags(category, config, preset, metrics)
        version = register_version(client, category, source=source, run_id=run_id, model_id=model_id, tags=tags)
        return registered_name(category), version
