"""One category's MLflow child run as a TrainCallback: tags, params, metrics, artifacts, models, registration.

Every method only queues writes on the session's ``ResilientWriter`` and none raises. A finished run logs
the ``model.onnx`` the run exported (``TrainResult.onnx_path``) as an ``mlflow.onnx`` model and as the
registered pyfunc, then registers version N of ``adkd-<category>`` when the session registers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adkd.errors import AdkdError
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.platform.registry.model_logging import log_onnx_model, log_pyfunc_model
from adkd.platform.registry.versions import register_version, registered_name, version_tags
from adkd.platform.tracking.client import ResilientWriter
from adkd.platform.tracking.redaction import is_secret, redact, redact_uri
from adkd.platform.tracking.run_context import device_tag
from adkd.platform.tracking.values import MAX_TAG_VALUE, finite_metrics, flatten

if TYPE_CHECKING:
    from adkd.platform.tracking.session import TrackingSession

log = logging.getLogger(__name__)

# on_artifact kind → folder in the run's artifacts ("" = top level). The ONNX files ("onnx", "onnx_int8")
# are not uploaded as files: they are logged as models at the end of a finished run.
ARTIFACT_DIRS = {
    "config": "config",
    "data_validation": "validation",
    "validation": "validation",
    "metrics": "",
    "scores": "",
    "model": "checkpoint",
    "checkpoint": "checkpoint",
}


@dataclass
class RunHandle:
    """A child run as the writer thread knows it; ``run_id`` is set once the server created it."""

    category: str
    run_id: str | None = None
    onnx_model_uri: str | None = None
    pyfunc_model_uri: str | None = None
    pyfunc_model_id: str | None = None
    registered_version: str | None = None

    def require_run_id(self) -> str:
        """The run id; raises when the server never created the run (only call it on the writer thread)."""
        if self.run_id is None:
            raise AdkdError(f"MLflow run of {self.category} was never created")
        return self.run_id


def run_id_of(run_id_or_handle: Any) -> str:
    """The MLflow run id of a handle (raises if the run was never created) or of a plain id."""
    if isinstance(run_id_or_handle, RunHandle):
        return run_id_or_handle.require_run_id()
    return str(run_id_or_handle)


def _existing(*paths: str | Path | None) -> Path | None:
    """The first path that is a file here: the result's own, else the one its artifact event named.

    On a Ray driver the two differ when only the events were rebased onto the staged outputs.
    """
    for path in paths:
        if path and Path(path).is_file():
            return Path(path)
    return None


class CategoryTracker(NullCallback):
    """TrainCallback: one category's child run. Methods only queue writes; none raises."""

    def __init__(self, session: TrackingSession, category: str, preset: str | None = None) -> None:
        self.session = session
        self.category = category
        self.preset = preset
        self.handle = RunHandle(category)
        self.config: dict[str, Any] = {}
        self.checkpoint: Path | None = None
        self.onnx_path: Path | None = None  # from on_artifact(..., "onnx"); TrainResult.onnx_path wins
        self.int8_path: Path | None = None  # from on_artifact(..., "onnx_int8"); TrainResult.int8_path wins
        self.run_dir: Path | None = None
        self.status = "RUNNING"
        self.error: str | None = None
        self._started = False

    @property
    def _writer(self) -> ResilientWriter:
        assert self.session.writer is not None, "TrackingSession.start_parent() was not called"
        return self.session.writer

    def on_start(self, config: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        self.config = dict(config)
        session, handle, client = self.session, self.handle, self.session._client
        model = str(config.get("model", ""))
        data = session.data_root or redact_uri(str(config.get("data") or ""))
        tags = {
            "mlflow.runName": f"{model}-{self.category}" if model else self.category,
            "mlflow.parentRunId": session.parent_run_id,
            "category": self.category,
            "model": model,
            "backbone": str(config.get("backbone") or ""),
            "preset": str(self.preset or config.get("preset") or ""),
            "data": data,
            "device": device_tag(config),
            **session._env_tags,
        }
        tags = {k: v for k, v in tags.items() if v is not None and not is_secret(k, v)}
        experiment_id = session.experiment_id

        def create() -> None:
            if handle.run_id is None:
                handle.run_id = client.create_run(experiment_id, tags=tags).info.run_id

        self._writer.submit(f"create run of {self.category}", create)
        session._log_params(handle, redact(flatten(self.config)), self.category)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(epoch)) for k, v in finite_metrics(metrics).items()]
        if not batch:
            return
        client, handle = self.session._client, self.handle

        def send(items: list[Any]) -> None:
            client.log_batch(run_id_of(handle), metrics=items)

        self._writer.submit_metrics(f"metrics of {self.category} epoch {epoch}", send, batch, handle)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.checkpoint = Path(path)

    def on_artifact(self, path: Path, kind: str) -> None:
        path = Path(path)
        if self.run_dir is None:
            self.run_dir = path.parent
        if kind == "onnx":
            self.onnx_path = path  # logged as models at the end, if the run succeeds
            return
        if kind == "onnx_int8":
            self.int8_path = path  # inside the pyfunc model, not a loose artifact
            return
        if kind in ("model", "checkpoint"):
            self.checkpoint = path  # uploaded once, at the end, if the run succeeds
            return
        if kind == "config":
            path = self._redacted_config(path)
        folder = ARTIFACT_DIRS.get(kind)
        if folder is None:
            curve = any(word in kind for word in ("curve", "roc", "pro"))
            folder = "overlays" if "overlay" in kind else "curves" if curve else f"plots/{kind}"
        self._log_artifact(path, folder or None)

    def _log_artifact(self, path: Path, folder: str | None) -> None:
        client, handle = self.session._client, self.handle
        if path.is_dir():
            self._writer.submit(
                f"artifacts {path.name} of {self.category}",
                lambda: client.log_artifacts(run_id_of(handle), str(path), folder),
            )
        else:
            self._writer.submit(
                f"artifact {path.name} of {self.category}",
                lambda: client.log_artifact(run_id_of(handle), str(path), folder),
            )

    def _redacted_config(self, path: Path) -> Path:
        """A copy of a JSON config without secrets; non-JSON configs are not uploaded verbatim."""
        out = path.with_name(f"{path.stem}.tracked.json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = self.config
        out.write_text(json.dumps(redact(data) if isinstance(data, dict) else {}, indent=2, default=str) + "\n")
        return out

    def on_end(self, result: TrainResult) -> None:
        try:
            self._end(result)
        except Exception as exc:  # a callback must not break training; the run is marked FAILED instead
            log.exception("tracking the end of %s failed", self.category)
            self._fail(f"tracking failed: {type(exc).__name__}: {exc}")

    def _end(self, result: TrainResult) -> None:
        if not self._started:
            self.on_start(result.config or {})
        self.run_dir = Path(result.run_dir)
        client, handle = self.session._client, self.handle
        final = finite_metrics(result.metrics)
        final["duration_s"] = float(result.duration_s)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(result.epochs_run)) for k, v in final.items()]

        def send(items: list[Any]) -> None:
            client.log_batch(run_id_of(handle), metrics=items)

        self._writer.submit_metrics(f"final metrics of {self.category}", send, batch, handle)
        tags = {"data_fingerprint": result.data_fingerprint, **result.tags} if result.data_fingerprint else result.tags
        self._set_tags(tags)
        if result.status != "FINISHED":
            self._fail(result.error or f"run ended {result.status}")
            return
        onnx_path = _existing(result.onnx_path, self.onnx_path)
        if onnx_path is None:
            self._fail(f"{self.category}: the run wrote no model.onnx; nothing to log or register")
            return
        int8_path = _existing(result.int8_path, self.int8_path)
        checkpoint = Path(result.checkpoint_path) if result.checkpoint_path else self.checkpoint
        if checkpoint is not None and checkpoint.is_file():
            self._log_artifact(checkpoint, "checkpoint")
        self._log_models(onnx_path, int8_path)
        if self.session.register:
            self.register(final)
        self.status = "FINISHED"
        self._writer.submit(f"end run of {self.category}", lambda: client.set_terminated(run_id_of(handle), "FINISHED"))

    def _set_tags(self, tags: dict[str, str]) -> None:
        client, handle = self.session._client, self.handle
        for key, value in tags.items():
            self._writer.submit(f"{key} tag of {self.category}", lambda k=key, v=value: client.set_tag(
                run_id_of(handle), k, str(v)[:MAX_TAG_VALUE]))  # fmt: skip

    def _fail(self, error: str) -> None:
        self.status, self.error = "FAILED", error
        client, handle = self.session._client, self.handle
        self._writer.submit(
            f"error tag of {self.category}", lambda: client.set_tag(run_id_of(handle), "error", error[:MAX_TAG_VALUE])
        )
        self._writer.submit(
            f"end run of {self.category} (FAILED)", lambda: client.set_terminated(run_id_of(handle), "FAILED")
        )

    def _log_models(self, onnx_path: Path, int8_path: Path | None = None) -> None:
        handle, category = self.handle, self.category
        client, experiment_id = self.session._client, self.session.experiment_id

        def log_onnx() -> None:
            handle.onnx_model_uri = log_onnx_model(onnx_path, run_id_of(handle), experiment_id)
            client.set_tag(run_id_of(handle), "onnx_model_uri", handle.onnx_model_uri)

        def log_pyfunc() -> None:
            info = log_pyfunc_model(onnx_path, run_id_of(handle), experiment_id, int8_path)
            handle.pyfunc_model_uri, handle.pyfunc_model_id = info.model_uri, info.model_id
            client.set_tag(run_id_of(handle), "pyfunc_model_uri", info.model_uri)

        self._writer.submit(f"ONNX model of {category}", log_onnx)
        self._writer.submit(f"pyfunc model of {category}", log_pyfunc)

    def register(self, metrics: dict[str, float]) -> None:
        """Queue version N of ``adkd-<category>`` from this run's pyfunc model (after its upload; once)."""
        client, handle, category = self.session._client, self.handle, self.category
        tags = version_tags(category, self.config, self.preset, metrics)

        def register() -> None:
            if handle.registered_version is not None or handle.pyfunc_model_uri is None:
                return
            handle.registered_version = register_version(
                client,
                category,
                source=handle.pyfunc_model_uri,
                run_id=run_id_of(handle),
                model_id=handle.pyfunc_model_id,
                tags=tags,
            )

        self._writer.submit(f"register {registered_name(category)}", register)
