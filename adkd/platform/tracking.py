"""MLflow tracking of training commands: one parent run per command, one child run per category.

All writes go through one ``TrackingSession`` in the driver process (so many workers never write to
one SQLite file), on one background thread (``ResilientWriter``) that survives server outages:

    session = TrackingSession.from_settings(settings, data_root, command="train")
    session.start_parent()                       # ServiceError here if MLflow is unreachable
    cb = session.child("bottle")                 # a TrainCallback; a Ray driver can replay worker events
    train_category(config, callbacks=[cb])
    summary = session.finish()                   # flushes; says where results are if MLflow never came back

A finished child run gets the ONNX export (verified against PyTorch), logged twice: the raw graph with
``mlflow.onnx`` and the registered pyfunc (``adkd.platform.pyfunc``) that takes encoded images; then
version N of ``adkd-<category>``. A failed run ends FAILED with the error in the ``error`` tag and
is never registered.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adkd.errors import AdkdError
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.platform.mlflow_client import (
    ResilientWriter,
    check_reachable,
    configure_http_env,
    is_remote,
    redact_uri,
    write_unsent_report,
)
from adkd.platform.mlflow_labels import (
    experiment_tags,
    latest_version_tags,
    mark_training_experiment,
    model_description,
    version_description,
)

log = logging.getLogger(__name__)

SECRET_PATTERN = re.compile(
    r"(^aws_|aws_access|aws_secret|aws_session|token|password|passwd|secret|credential|api[_-]?key|private[_-]?key)",
    re.IGNORECASE,
)
AWS_KEY_ID = re.compile(r"\bA[SK]IA[0-9A-Z]{16}\b")
# Registry version tags that promotion and `registry list` read.
KEY_METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000

# on_artifact kind → folder in the run's artifacts ("" = top level).
ARTIFACT_DIRS = {
    "config": "config",
    "data_validation": "validation",
    "validation": "validation",
    "metrics": "",
    "scores": "",
    "model": "checkpoint",
    "checkpoint": "checkpoint",
}


# --------------------------------------------------------------------------- params, tags, secrets


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1}}`` → ``{"optimizer.lr": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _strip_userinfo(text: str) -> str:
    parsed = urlparse(text)
    if parsed.scheme and parsed.netloc and (parsed.password or parsed.username):
        host = parsed.hostname or ""
        netloc = host + (f":{parsed.port}" if parsed.port else "")
        return parsed._replace(netloc=netloc).geturl()
    return text


def is_secret(key: str, value: Any = "") -> bool:
    """Keys or values that look like credentials (AWS_*, token, password, secret, keys)."""
    if SECRET_PATTERN.search(str(key)):
        return True
    return isinstance(value, str) and bool(SECRET_PATTERN.search(value) or AWS_KEY_ID.search(value))


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking entries and credentials inside URIs; the rest unchanged."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if is_secret(key, value):
            continue
        if isinstance(value, dict):
            out[key] = redact(value)
            continue
        out[key] = _strip_userinfo(value) if isinstance(value, str) else value
    return out


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_VALUE]


_FINGERPRINTS: dict[tuple[str, str], str] = {}
_FINGERPRINT_LOCK = threading.Lock()


def data_fingerprint(root: str | Path, category: str | None = None) -> str:
    """SHA-256 over the sorted relative file names and their content hashes ('' when not local)."""
    root_path = Path(str(root)).expanduser()
    target = root_path / category if category else root_path
    key = (str(target.resolve()) if target.exists() else str(target), category or "")
    with _FINGERPRINT_LOCK:
        if key in _FINGERPRINTS:
            return _FINGERPRINTS[key]
    if not target.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    value = digest.hexdigest()
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[key] = value
    return value


def git_commit() -> str:
    """The commit of the adkd source tree (or of the working directory), 'unknown' outside git."""
    for where in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def environment_tags() -> dict[str, str]:
    import torch

    from adkd import __version__

    return {
        "git_commit": git_commit(),
        "adkd_version": __version__,
        "torch_version": torch.__version__,
        "user": getpass.getuser(),
    }


def _device(config: dict[str, Any]) -> str:
    name = str(config.get("device", "auto"))
    if name != "auto":
        return name
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def dataset_name(data_root: str | Path) -> str:
    """The experiment name of a data set: the last component of its root (local path or s3://)."""
    text = str(data_root).rstrip("/")
    return Path(urlparse(text).path if "://" in text else text).name or "adkd"


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


# --------------------------------------------------------------------------- session


@dataclass
class RunHandle:
    """A child run as the writer thread knows it; ``run_id`` is set once the server created it."""

    category: str
    run_id: str | None = None
    onnx_model_uri: str | None = None
    pyfunc_model_uri: str | None = None
    pyfunc_model_id: str | None = None
    registered_version: str | None = None


@dataclass
class TrackingSummary:
    """What ``TrackingSession.finish`` reports to the command."""

    parent_run_id: str | None
    experiment: str
    tracking_uri: str
    complete: bool  # every write reached MLflow
    runs: dict[str, str | None] = field(default_factory=dict)  # category → child run id
    registered: dict[str, str] = field(default_factory=dict)  # category → version
    failed: dict[str, str] = field(default_factory=dict)  # category → error
    unsent_report: Path | None = None
    local_results: list[str] = field(default_factory=list)
    outages: int = 0

    @property
    def message(self) -> str:
        if self.complete:
            return f"tracked in MLflow {redact_uri(self.tracking_uri)}, experiment '{self.experiment}'"
        places = ", ".join(self.local_results) or "the run folders"
        return (
            f"MLflow at {redact_uri(self.tracking_uri)} did not come back: some results were not sent "
            f"(list in {self.unsent_report}); they are on local disk in {places}"
        )


class TrackingSession:
    """One command's MLflow parent run and its child runs, written from this process only."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        command: str,
        *,
        artifact_location: str | None = None,
        register: bool = True,
        local_dir: str | Path = "adkd-runs",
        flush_timeout_s: float = 120.0,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.command = command
        self.artifact_location = artifact_location
        self.register = register
        self.local_dir = Path(local_dir)
        self.flush_timeout_s = flush_timeout_s
        self.params = params or {}
        self.tags = tags or {}
        self._backoff = (initial_backoff_s, max_backoff_s)
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.children: dict[str, CategoryTracker] = {}
        self.writer: ResilientWriter | None = None
        self._client: Any = None
        self._env_tags: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Any, data_root: str | Path, command: str, register: bool | None = None, **kwargs: Any
    ) -> TrackingSession:
        """A session over the configured store; experiment = settings.experiment or the data set's name."""
        remote = is_remote(settings.resolved_tracking_uri)
        return cls(
            settings.resolved_tracking_uri,
            settings.experiment or dataset_name(data_root),
            command,
            artifact_location=None if remote else settings.resolved_artifact_location,
            register=settings.register_models if register is None else register,
            local_dir=settings.runs_dir,
            **kwargs,
        )

    # -- lifecycle
    def start_parent(self) -> str:
        """Check the store, create the experiment and the parent run; raises ServiceError if unreachable."""
        import mlflow
        from mlflow import MlflowClient

        configure_http_env()
        check_reachable(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        self._env_tags = environment_tags()
        try:
            self.experiment_id = self._experiment_id()
            tags = {
                "mlflow.runName": f"{self.command}-{time.strftime('%Y%m%d-%H%M%S')}",
                "command": self.command,
                **self._env_tags,
                **self.tags,
            }
            run = self._client.create_run(self.experiment_id, tags=tags)
        except AdkdError:
            raise
        except Exception as exc:
            from adkd.errors import ServiceError

            raise ServiceError(
                f"MLflow at {redact_uri(self.tracking_uri)} refused to start the run ({str(exc).splitlines()[0]}); "
                "check the server and MLFLOW_TRACKING_URI"
            ) from exc
        self.parent_run_id = run.info.run_id
        self.writer = ResilientWriter(*self._backoff)
        params = redact(flatten(self.params))
        if params:
            self._log_params(self.parent_run_id, params, "parent")
        return self.parent_run_id

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self._client.restore_experiment(experiment.experiment_id)
            mark_training_experiment(self._client, experiment)
            return experiment.experiment_id
        try:
            return self._client.create_experiment(
                self.experiment, artifact_location=self.artifact_location, tags=experiment_tags()
            )
        except Exception:
            # Another command created it between our lookup and create.
            experiment = self._client.get_experiment_by_name(self.experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    def child(self, category: str, preset: str | None = None) -> CategoryTracker:
        """The TrainCallback that tracks one category as a child run of this command's run."""
        if self.writer is None:
            self.start_parent()
        tracker = CategoryTracker(self, category, preset=preset)
        self.children[category] = tracker
        return tracker

    def finish(self, status: str | None = None, error: str | None = None) -> TrackingSummary:
        """End the parent run (FAILED if any category failed), flush, report what could not be sent."""
        failed = {c: t.error or "failed" for c, t in self.children.items() if t.status == "FAILED"}
        summary = TrackingSummary(
            parent_run_id=self.parent_run_id,
            experiment=self.experiment,
            tracking_uri=self.tracking_uri,
            complete=True,
            failed=failed,
        )
        if self.writer is None:
            return summary
        final = status or ("FAILED" if failed or error else "FINISHED")
        parent = self.parent_run_id
        client = self._client
        if error:
            self.writer.submit("tag parent error", lambda: client.set_tag(parent, "error", str(error)[:MAX_TAG_VALUE]))
        self.writer.submit(f"end parent run ({final})", lambda: client.set_terminated(parent, final))
        complete = self.writer.close(self.flush_timeout_s)
        summary.complete = complete
        summary.outages = self.writer.outages
        summary.runs = {c: t.handle.run_id for c, t in self.children.items()}
        summary.registered = {
            c: t.handle.registered_version for c, t in self.children.items() if t.handle.registered_version
        }
        summary.local_results = [str(t.run_dir) for t in self.children.values() if t.run_dir is not None]
        if not complete:
            pending = self.writer.pending_descriptions()
            report = self.local_dir / "mlflow-unsent" / f"{self.command}-{time.strftime('%Y%m%d-%H%M%S')}.json"
            summary.unsent_report = write_unsent_report(
                report,
                self.tracking_uri,
                pending,
                {"experiment": self.experiment, "parent_run_id": parent, "local_results": summary.local_results},
            )
            log.warning(summary.message)
        self.writer = None
        return summary

    def __enter__(self) -> TrackingSession:
        if self.writer is None:
            self.start_parent()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.writer is not None:
            self.finish(status="FAILED" if exc is not None else None, error=str(exc) if exc is not None else None)

    # -- helpers used by the trackers (all run on the writer thread)
    def _log_params(self, run_id_or_handle: Any, params: dict[str, Any], what: str) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_value(v)) for k, v in sorted(params.items())]
        client = self._client
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]

            def send(chunk: list[Any] = chunk) -> None:
                client.log_batch(_run_id(run_id_or_handle), params=chunk)

            self.writer.submit(f"params of {what}", send)


def _run_id(run_id_or_handle: Any) -> str:
    if isinstance(run_id_or_handle, RunHandle):
        if run_id_or_handle.run_id is None:
            raise AdkdError(f"MLflow run of {run_id_or_handle.category} was never created")
        return run_id_or_handle.run_id
    return str(run_id_or_handle)


# --------------------------------------------------------------------------- per-category callback


class CategoryTracker(NullCallback):
    """TrainCallback: one category's child run. Methods only queue writes; none raises."""

    def __init__(self, session: TrackingSession, category: str, preset: str | None = None) -> None:
        self.session = session
        self.category = category
        self.preset = preset
        self.handle = RunHandle(category)
        self.config: dict[str, Any] = {}
        self.checkpoint: Path | None = None
        self.onnx_path: Path | None = None
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
        data = config.get("data")
        tags = {
            "mlflow.runName": f"{model}-{self.category}" if model else self.category,
            "mlflow.parentRunId": session.parent_run_id,
            "category": self.category,
            "model": model,
            "backbone": str(config.get("backbone") or ""),
            "preset": str(self.preset or config.get("preset") or ""),
            "data": _strip_userinfo(str(data or "")),
            "data_fingerprint": data_fingerprint(data, self.category) if data else "",
            "device": _device(config),
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
        batch = [Metric(k, v, now, int(epoch)) for k, v in _finite_metrics(metrics).items()]
        if not batch:
            return
        client, handle = self.session._client, self.handle

        def send(items: list[Any]) -> None:
            client.log_batch(_run_id(handle), metrics=items)

        self._writer.submit_metrics(f"metrics of {self.category} epoch {epoch}", send, batch, handle)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.checkpoint = Path(path)

    def on_artifact(self, path: Path, kind: str) -> None:
        path = Path(path)
        if self.run_dir is None:
            self.run_dir = path.parent
        if kind == "onnx":
            self.onnx_path = path
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
                lambda: client.log_artifacts(_run_id(handle), str(path), folder),
            )
        else:
            self._writer.submit(
                f"artifact {path.name} of {self.category}",
                lambda: client.log_artifact(_run_id(handle), str(path), folder),
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
        final = _finite_metrics(result.metrics)
        final["duration_s"] = float(result.duration_s)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(result.epochs_run)) for k, v in final.items()]

        def send(items: list[Any]) -> None:
            client.log_batch(_run_id(handle), metrics=items)

        self._writer.submit_metrics(f"final metrics of {self.category}", send, batch, handle)
        if result.status != "FINISHED":
            self._fail(result.error or f"run ended {result.status}")
            return
        checkpoint = Path(result.checkpoint_path) if result.checkpoint_path else self.checkpoint
        try:
            onnx_path = self.onnx_path or self._export(checkpoint)
            int8_path = self._int8(checkpoint, onnx_path) if self.config.get("export_int8") else None
        except AdkdError as exc:
            self._fail(str(exc))
            return
        if checkpoint is not None and checkpoint.is_file():
            self._log_artifact(checkpoint, "checkpoint")
        self._log_models(onnx_path, final, int8_path)
        if self.session.register:
            self._register(final)
        self.status = "FINISHED"
        self._writer.submit(f"end run of {self.category}", lambda: client.set_terminated(_run_id(handle), "FINISHED"))

    def _export(self, checkpoint: Path | None) -> Path:
        from adkd.pipelines.export import export_checkpoint

        if checkpoint is None or not checkpoint.is_file():
            raise AdkdError(f"{self.category}: no checkpoint to export to ONNX; the run cannot be registered")
        return export_checkpoint(checkpoint)

    def _int8(self, checkpoint: Path | None, onnx_path: Path) -> Path | None:
        """``export_int8=true``: the gated int8 model (None when refused; the refusal is tagged)."""
        from mlflow.entities import Metric

        from adkd.platform.int8_models import int8_for_run

        if checkpoint is None:
            raise AdkdError(f"{self.category}: no checkpoint to calibrate an int8 model from")
        outcome, client, handle = int8_for_run(checkpoint, onnx_path), self.session._client, self.handle
        for key, value in outcome.tags.items():
            self._writer.submit(f"{key} tag of {self.category}", lambda k=key, v=value: client.set_tag(
                _run_id(handle), k, v[:MAX_TAG_VALUE]))  # fmt: skip
        if outcome.metrics:
            self._writer.submit(f"int8 metrics of {self.category}", lambda: client.log_batch(
                _run_id(handle), metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in outcome.metrics.items()]
            ))  # fmt: skip
        return outcome.path

    def _fail(self, error: str) -> None:
        self.status, self.error = "FAILED", error
        client, handle = self.session._client, self.handle
        self._writer.submit(
            f"error tag of {self.category}", lambda: client.set_tag(_run_id(handle), "error", error[:MAX_TAG_VALUE])
        )
        self._writer.submit(
            f"end run of {self.category} (FAILED)", lambda: client.set_terminated(_run_id(handle), "FAILED")
        )

    def _log_models(self, onnx_path: Path, metrics: dict[str, float], int8_path: Path | None = None) -> None:
        handle, category = self.handle, self.category

        client = self.session._client

        experiment_id = self.session.experiment_id

        def log_onnx() -> None:
            handle.onnx_model_uri = log_onnx_model(onnx_path, _run_id(handle), experiment_id)
            client.set_tag(_run_id(handle), "onnx_model_uri", handle.onnx_model_uri)

        def log_pyfunc() -> None:
            info = log_pyfunc_model(onnx_path, _run_id(handle), experiment_id, int8_path)
            handle.pyfunc_model_uri, handle.pyfunc_model_id = info.model_uri, info.model_id
            client.set_tag(_run_id(handle), "pyfunc_model_uri", info.model_uri)

        self._writer.submit(f"ONNX model of {category}", log_onnx)
        self._writer.submit(f"pyfunc model of {category}", log_pyfunc)

    def _register(self, metrics: dict[str, float]) -> None:
        client, handle, category = self.session._client, self.handle, self.category
        version_tags = {
            "category": category,
            "model": str(self.config.get("model", "")),
            "backbone": str(self.config.get("backbone") or ""),
            "preset": str(self.preset or self.config.get("preset") or ""),
        }
        for name in KEY_METRICS:
            if f"test/{name}" in metrics:
                version_tags[f"metric.{name}"] = repr(metrics[f"test/{name}"])

        def register() -> None:
            if handle.registered_version is not None or handle.pyfunc_model_uri is None:
                return
            name = registered_name(category)
            ensure_registered_model(client, name, category)
            version = client.create_model_version(
                name,
                source=handle.pyfunc_model_uri,
                run_id=_run_id(handle),
                tags=version_tags,
                model_id=handle.pyfunc_model_id,
                description=version_description(category, version_tags, _run_id(handle)),
            )
            for key, value in latest_version_tags(str(version.version), version_tags).items():
                client.set_registered_model_tag(name, key, value)
            handle.registered_version = str(version.version)
            client.set_tag(_run_id(handle), "registered_model", f"{name}/{version.version}")

        self._writer.submit(f"register {registered_name(category)}", register)


# --------------------------------------------------------------------------- model logging


def registered_name(category: str) -> str:
    return f"adkd-{category}"


def ensure_registered_model(client: Any, name: str, category: str) -> None:
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


def _onnx_example(onnx_path: Path) -> tuple[dict[str, Any], Any]:
    import numpy as np
    import onnxruntime as ort
    from mlflow.models import infer_signature

    from adkd.pipelines.export import INPUT_NAME, read_metadata

    size = int(read_metadata(onnx_path)["image_size"])
    example = {INPUT_NAME: np.full((1, size, size, 3), 128, dtype=np.uint8)}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, example)))
    return example, infer_signature(example, outputs)


def _logged_model_id(run_id: str, experiment_id: str | None, name: str, flavor: str) -> str | None:
    """Create the LoggedModel in the run's experiment: left to itself, ``Model.log`` would put it in the
    process's active experiment (often 'Default'), not the run's."""
    from mlflow import MlflowClient

    if experiment_id is None:
        return None
    client = MlflowClient()
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags={"flavor": flavor})
    return model.model_id


@contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """Silence what MLflow prints on every log_model and that says nothing about this model.

    "CUDAExecutionProvider unavailable" (the input-example check loads the model on this CPU box; serving
    on a GPU host still gets CUDA), the CloudPickle notice for the pyfunc class, "Validating input example"
    and the artifact download progress bars. Errors still show.
    """
    loggers = [logging.getLogger(name) for name in ("mlflow.onnx", "mlflow.pyfunc", "mlflow.models")]
    levels = [lg.level for lg in loggers]
    previous_bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if previous_bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous_bar


def log_onnx_model(onnx_path: Path, run_id: str, experiment_id: str | None = None) -> str:
    """The raw exported graph as an ``mlflow.onnx`` model of ``run_id`` (uint8 NHWC tensor in)."""
    import mlflow.onnx
    import onnx

    example, signature = _onnx_example(onnx_path)
    with _quiet_model_logging():
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="onnx",
            signature=signature,
            input_example=example,
            pip_requirements=[r for r in _pyfunc_requirements() if not r.startswith("pillow")],
            save_as_external_data=False,
            run_id=run_id,
            model_id=_logged_model_id(run_id, experiment_id, "onnx", "onnx"),
        )
    return info.model_uri


def _pyfunc_requirements() -> list[str]:
    from adkd.platform.pyfunc import pip_requirements

    return pip_requirements()


def log_pyfunc_model(
    onnx_path: Path, run_id: str, experiment_id: str | None = None, int8_path: Path | None = None
) -> Any:
    """The registered model: ``adkd.platform.pyfunc.OnnxAnomalyModel`` over ``onnx_path`` (and the int8 file)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from adkd.pipelines.export import read_metadata
    from adkd.platform.int8_models import INT8_ARTIFACT
    from adkd.platform.pyfunc import ONNX_ARTIFACT, OnnxAnomalyModel, signature_and_example

    meta = read_metadata(onnx_path)
    signature, example = signature_and_example(int(meta["image_size"]))
    with _quiet_model_logging():
        return Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            python_model=OnnxAnomalyModel(),
            artifacts={ONNX_ARTIFACT: str(onnx_path), **({INT8_ARTIFACT: str(int8_path)} if int8_path else {})},
            signature=signature,
            input_example=example,
            pip_requirements=_pyfunc_requirements(),
            metadata={k: meta[k] for k in ("model", "backbone", "category", "image_size") if k in meta},
            run_id=run_id,
            model_id=_logged_model_id(run_id, experiment_id, "model", "python_function"),
        )


# --------------------------------------------------------------------------- single-command use


class StandaloneTracker(NullCallback):
    """A session of its own around one category (``adkd train``): opened now, closed at ``on_end``.

    Creating it checks the tracking store, so an unreachable server fails the command before training.
    A finished training whose export or tracking failed raises at ``on_end`` so the command fails too.
    """

    def __init__(self, session: TrackingSession, category: str, preset: str | None = None) -> None:
        self.session = session
        session.start_parent()
        self.tracker = session.child(category, preset=preset)
        self.summary: TrackingSummary | None = None

    @classmethod
    def for_config(cls, config: Any) -> NullCallback:
        """Tracking for a TrainConfig with the default settings.

        ``ADKD_TRACKING=off`` turns it into a no-op; ``ADKD_REGISTER=off`` (or ``register_models = false``
        in adkd.toml) tracks without registering a version.
        """
        import os

        from adkd.settings import load_settings

        off = ("off", "0", "false", "no")
        if os.environ.get("ADKD_TRACKING", "").lower() in off:
            return NullCallback()
        settings = load_settings()
        register = settings.register_models and os.environ.get("ADKD_REGISTER", "").lower() not in off
        session = TrackingSession.from_settings(settings, config.data, command="train", register=register)
        return cls(session, config.category, preset=getattr(config, "preset", None))

    def on_start(self, config: dict[str, Any]) -> None:
        self.tracker.on_start(config)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.on_epoch_end(epoch, metrics)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.tracker.on_checkpoint(path, epoch)

    def on_artifact(self, path: Path, kind: str) -> None:
        self.tracker.on_artifact(path, kind)

    def on_end(self, result: TrainResult) -> None:
        from rich.console import Console

        self.tracker.on_end(result)
        self.summary = self.session.finish()
        console = Console(stderr=True)
        console.print(self.summary.message, highlight=False)
        version = self.summary.registered.get(self.tracker.category)
        if version:
            console.print(f"registered {registered_name(self.tracker.category)} version {version}", highlight=False)
        if result.status == "FINISHED" and self.tracker.status == "FAILED":
            raise AdkdError(f"{self.tracker.category}: {self.tracker.error}")
