"""One category's MLflow child run as a TrainCallback: tags, params, metrics, artifacts, models, registration.

Every method only queues writes on the command's ``ResilientWriter`` and none raises. The tracker knows its
command through the ``ChildRunContext`` the session hands it (child_context.py), nothing else. A finished run
hands the ``model.onnx`` it exported (``TrainResult.onnx_path``) to the context's ``ModelPublisher``: logged as
an ``mlflow.onnx`` model and as the servable pyfunc, then registered as a version when the session registers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.platform.tracking.child_context import ChildRunContext, RunHandle, run_id_of
from adkd.platform.tracking.redaction import is_secret, redact, redact_uri
from adkd.platform.tracking.run_context import RESOLVED_DEVICE, device_tag
from adkd.platform.tracking.values import MAX_TAG_VALUE, finite_metrics, flatten

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

    def __init__(self, context: ChildRunContext, category: str, preset: str | None = None) -> None:
        self.context = context
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
        self.data_tags: dict[str, str] = {}  # the run's data and data_fingerprint tags: what a version records

    def on_start(self, config: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        self.config = {k: v for k, v in config.items() if k != RESOLVED_DEVICE}  # a tag, not a setting
        context, handle, client = self.context, self.handle, self.context.client
        model = str(config.get("model", ""))
        data = context.data_root or redact_uri(str(config.get("data") or ""))
        tags = {
            "mlflow.runName": f"{model}-{self.category}" if model else self.category,
            "mlflow.parentRunId": context.parent_run_id,
            "category": self.category,
            "model": model,
            "backbone": str(config.get("backbone") or ""),
            "preset": str(self.preset or config.get("preset") or ""),
            "data": data,
            "device": device_tag(config),
            **context.env_tags,
        }
        tags = {k: v for k, v in tags.items() if v is not None and not is_secret(k, v)}
        self.data_tags["data"] = str(tags.get("data") or "")
        experiment_id = context.experiment_id

        def create() -> None:
            if handle.run_id is None:
                handle.run_id = client.create_run(experiment_id, tags=tags).info.run_id

        context.writer.submit(f"create run of {self.category}", create)
        context.log_params(handle, redact(flatten(self.config)), self.category)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(epoch)) for k, v in finite_metrics(metrics).items()]
        if not batch:
            return
        client, handle = self.context.client, self.handle

        def send(items: list[Any]) -> None:
            client.log_batch(run_id_of(handle), metrics=items)

        self.context.writer.submit_metrics(f"metrics of {self.category} epoch {epoch}", send, batch, handle)

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
        if kind == "onnx_int8_openvino":
            return  # beside model.onnx: the pyfunc model takes it from there (registry.model_logging)
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
        client, handle = self.context.client, self.handle
        if path.is_dir():
            self.context.writer.submit(
                f"artifacts {path.name} of {self.category}",
                lambda: client.log_artifacts(run_id_of(handle), str(path), folder),
            )
        else:
            self.context.writer.submit(
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
        client, handle = self.context.client, self.handle
        final = finite_metrics(result.metrics)
        final["duration_s"] = float(result.duration_s)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(result.epochs_run)) for k, v in final.items()]

        def send(items: list[Any]) -> None:
            client.log_batch(run_id_of(handle), metrics=items)

        self.context.writer.submit_metrics(f"final metrics of {self.category}", send, batch, handle)
        tags = {"data_fingerprint": result.data_fingerprint, **result.tags} if result.data_fingerprint else result.tags
        self._set_tags(tags)
        self.data_tags |= {k: str(v) for k, v in tags.items() if k in ("data", "data_fingerprint")}
        if result.data_fingerprint:
            self._log_dataset(result.data_fingerprint)
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
        if self.context.register:
            self.register(final)
        self.status = "FINISHED"
        self.context.writer.submit(
            f"end run of {self.category}", lambda: client.set_terminated(run_id_of(handle), "FINISHED")
        )

    def _log_dataset(self, fingerprint: str) -> None:
        """The data set as the run's MLflow dataset input (the runs table's Dataset column)."""
        from adkd.platform.tracking.datasets import dataset_input

        root = self.context.data_root or redact_uri(str(self.config.get("data") or ""))
        if not root:
            return
        client, handle, category = self.context.client, self.handle, self.category
        self.context.writer.submit(
            f"dataset input of {category}",
            lambda: client.log_inputs(run_id_of(handle), datasets=[dataset_input(root, category, fingerprint)]),
        )

    def _set_tags(self, tags: dict[str, str]) -> None:
        client, handle = self.context.client, self.handle
        for key, value in tags.items():
            self.context.writer.submit(f"{key} tag of {self.category}", lambda k=key, v=value: client.set_tag(
                run_id_of(handle), k, str(v)[:MAX_TAG_VALUE]))  # fmt: skip

    def _fail(self, error: str) -> None:
        self.status, self.error = "FAILED", error
        client, handle = self.context.client, self.handle
        self.context.writer.submit(
            f"error tag of {self.category}", lambda: client.set_tag(run_id_of(handle), "error", error[:MAX_TAG_VALUE])
        )
        self.context.writer.submit(
            f"end run of {self.category} (FAILED)", lambda: client.set_terminated(run_id_of(handle), "FAILED")
        )

    def _log_models(self, onnx_path: Path, int8_path: Path | None = None) -> None:
        handle, category = self.handle, self.category
        client, experiment_id, publisher = self.context.client, self.context.experiment_id, self.context.publisher

        def log_onnx() -> None:
            handle.onnx_model_uri = publisher.log_onnx(onnx_path, run_id_of(handle), experiment_id)
            client.set_tag(run_id_of(handle), "onnx_model_uri", handle.onnx_model_uri)

        def log_pyfunc() -> None:
            uri, model_id = publisher.log_pyfunc(onnx_path, run_id_of(handle), experiment_id, int8_path)
            handle.pyfunc_model_uri, handle.pyfunc_model_id = uri, model_id
            client.set_tag(run_id_of(handle), "pyfunc_model_uri", uri)

        self.context.writer.submit(f"ONNX model of {category}", log_onnx)
        self.context.writer.submit(f"pyfunc model of {category}", log_pyfunc)

    def register(self, metrics: dict[str, float]) -> None:
        """Queue a new registered version from this run's pyfunc model (after its upload; once)."""
        client, handle, category = self.context.client, self.handle, self.category
        publisher, config, preset = self.context.publisher, dict(self.config), self.preset
        data_tags = dict(self.data_tags)

        def register() -> None:
            if handle.registered_version is not None or handle.pyfunc_model_uri is None:
                return
            handle.registered_name, handle.registered_version = publisher.register(
                client,
                category,
                source=handle.pyfunc_model_uri,
                run_id=run_id_of(handle),
                model_id=handle.pyfunc_model_id,
                config=config,
                preset=preset,
                metrics=metrics,
                data_tags=data_tags,
            )

        self.context.writer.submit(f"register the model of {category}", register)
