"""MLflow tracking of training commands: one parent run per command, one child run per category.

All writes go through one ``TrackingSession`` in the driver process (so many workers never write to
one SQLite file), on one background thread (``ResilientWriter``) that survives server outages:

    session = TrackingSession.from_settings(settings, data_root, "train", publisher=RegistryPublisher())
    session.start_parent()                       # ServiceError here if MLflow is unreachable
    cb = session.child("bottle")                 # a TrainCallback; a Ray driver can replay worker events
    train_category(config, callbacks=[cb])
    summary = session.finish()                   # flushes; says where results are if MLflow never came back

A finished child run hands the ``model.onnx`` the run exported (``TrainResult.onnx_path``) to the session's
``ModelPublisher`` (the model registry's, ``adkd.platform.registry.publishing``): logged twice, the raw graph
with ``mlflow.onnx`` and the pyfunc that takes encoded images, then version N of ``adkd-<category>``. A failed
run ends FAILED with the error in the ``error`` tag and is never registered. Child runs see the session only
through the ``ChildRunContext`` it hands them (child_context.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import AdkdError, first_line
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.platform.tracking.category_run import CategoryTracker
from adkd.platform.tracking.child_context import ChildRunContext, ModelPublisher, queue_params
from adkd.platform.tracking.client import (
    ResilientWriter,
    client_for,
    ensure_experiment,
    is_remote,
    write_unsent_report,
)
from adkd.platform.tracking.labels import experiment_tags, mark_training_experiment
from adkd.platform.tracking.redaction import redact, redact_uri
from adkd.platform.tracking.run_context import dataset_name, environment_tags
from adkd.platform.tracking.values import MAX_TAG_VALUE, flatten

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- session


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
        publisher: ModelPublisher,
        artifact_location: str | None = None,
        register: bool = True,
        local_dir: str | Path = "adkd-runs",
        data_root: str | Path | None = None,
        flush_timeout_s: float = 120.0,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        run_name: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.command = command
        self.publisher = publisher
        self.artifact_location = artifact_location
        self.register = register
        self.local_dir = Path(local_dir)
        # The data root the user gave (a local path or s3://): every child run's `data` tag, never a worker's cache.
        self.data_root = redact_uri(str(data_root)) if data_root else None
        self.flush_timeout_s = flush_timeout_s
        self.params = params or {}
        self.tags = tags or {}
        self.run_name = run_name  # the parent run's name; default <command>-<time>
        self._backoff = (initial_backoff_s, max_backoff_s)
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.children: dict[str, CategoryTracker] = {}
        self.writer: ResilientWriter | None = None
        self.client: Any = None  # the MlflowClient, once the parent run started
        self._context: ChildRunContext | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        data_root: str | Path,
        command: str,
        *,
        publisher: ModelPublisher,
        register: bool | None = None,
        **kwargs: Any,
    ) -> TrackingSession:
        """A session over the configured store; experiment = settings.experiment or the data set's name."""
        remote = is_remote(settings.resolved_tracking_uri)
        return cls(
            settings.resolved_tracking_uri,
            settings.experiment or dataset_name(data_root),
            command,
            publisher=publisher,
            artifact_location=None if remote else settings.resolved_artifact_location,
            register=settings.register_models if register is None else register,
            local_dir=settings.runs_dir,
            data_root=data_root,
            **kwargs,
        )

    # -- lifecycle
    def start_parent(self) -> str:
        """Check the store, create the experiment and the parent run; raises ServiceError if unreachable."""
        import mlflow

        self.client = client_for(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        env_tags = environment_tags()
        try:
            experiment = ensure_experiment(self.client, self.experiment, self.artifact_location, experiment_tags())
            mark_training_experiment(self.client, experiment)
            self.experiment_id = experiment.experiment_id
            tags = {
                "mlflow.runName": self.run_name or f"{self.command}-{time.strftime('%Y%m%d-%H%M%S')}",
                "command": self.command,
                **env_tags,
                **self.tags,
            }
            run = self.client.create_run(self.experiment_id, tags=tags)
        except AdkdError:
            raise
        except Exception as exc:
            from adkd.errors import ServiceError

            raise ServiceError(
                f"MLflow at {redact_uri(self.tracking_uri)} refused to start the run ({first_line(exc)}); "
                "check the server and MLFLOW_TRACKING_URI"
            ) from exc
        self.parent_run_id = run.info.run_id
        self.writer = ResilientWriter(*self._backoff)
        self._context = ChildRunContext(
            client=self.client,
            writer=self.writer,
            experiment_id=self.experiment_id,
            parent_run_id=self.parent_run_id,
            env_tags=env_tags,
            data_root=self.data_root,
            register=self.register,
            publisher=self.publisher,
        )
        params = redact(flatten(self.params))
        if params:
            queue_params(self.writer, self.client, self.parent_run_id, params, "parent")
        return self.parent_run_id

    def child_context(self) -> ChildRunContext:
        """What a child run of this command is handed (the parent run is started first if need be)."""
        if self.writer is None or self._context is None:
            self.start_parent()
        assert self._context is not None
        return self._context

    def child(self, category: str, preset: str | None = None) -> CategoryTracker:
        """The TrainCallback that tracks one category as a child run of this command's run."""
        tracker = CategoryTracker(self.child_context(), category, preset=preset)
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
        client = self.client
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


# --------------------------------------------------------------------------- single-command use


class StandaloneTracker(NullCallback):
    """A session of its own around one category (``adkd train``): opened now, closed at ``on_end``.

    Opening it checks the tracking store, so an unreachable server fails the command before training.
    A finished training whose model logging or tracking failed raises at ``on_end`` so the command fails too.
    """

    def __init__(self, session: TrackingSession, category: str, preset: str | None = None) -> None:
        self.session = session
        session.start_parent()
        self.tracker = session.child(category, preset=preset)
        self.summary: TrackingSummary | None = None

    @classmethod
    def open(
        cls, settings: Any, config: Any, *, publisher: ModelPublisher, register: bool, run_name: str | None = None
    ) -> StandaloneTracker:
        """Tracking of one TrainConfig over ``settings``' store; ``register`` adds a version when it finishes."""
        register = register and settings.register_models
        session = TrackingSession.from_settings(
            settings, config.data, command="train", publisher=publisher, register=register, run_name=run_name
        )
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
        handle = self.tracker.handle
        if handle.registered_version:
            console.print(f"registered {handle.registered_name} version {handle.registered_version}", highlight=False)
        if result.status == "FINISHED" and self.tracker.status == "FAILED":
            category, error = self.tracker.category, str(self.tracker.error)
            raise AdkdError(error if error.startswith(f"{category}:") else f"{category}: {error}")
