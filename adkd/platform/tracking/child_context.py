"""What a category's child run is handed by its command's session: the contract between the two.

``TrackingSession`` (session.py) builds one ``ChildRunContext`` when its parent run starts and gives it to every
``CategoryTracker`` (category_run.py); the tracker reads nothing else of the session. How a finished run's
model reaches MLflow (logged to the run, registered as a version) is a ``ModelPublisher`` the session's creator
passes in: the model registry implements it (``adkd.platform.registry.publishing``) and sits above tracking,
so tracking never imports the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adkd.errors import AdkdError
from adkd.platform.tracking.client import ResilientWriter
from adkd.platform.tracking.values import param_value

PARAMS_PER_REQUEST = 100  # MLflow's log_batch limit for params


@dataclass
class RunHandle:
    """A child run as the writer thread knows it; ``run_id`` is set once the server created it."""

    category: str
    run_id: str | None = None
    onnx_model_uri: str | None = None
    pyfunc_model_uri: str | None = None
    pyfunc_model_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None

    def require_run_id(self) -> str:
        """The run id; raises when the server never created the run (only call it on the writer thread)."""
        if self.run_id is None:
            raise AdkdError(f"MLflow run of {self.category} was never created")
        return self.run_id


def run_id_of(run_id_or_handle: RunHandle | str) -> str:
    """The MLflow run id of a handle (raises if the run was never created) or of a plain id."""
    if isinstance(run_id_or_handle, RunHandle):
        return run_id_or_handle.require_run_id()
    return str(run_id_or_handle)


class ModelPublisher(Protocol):
    """How a finished run's ONNX model reaches MLflow. Every method runs on the writer thread."""

    def log_onnx(self, onnx_path: Path, run_id: str, experiment_id: str | None) -> str:
        """Log the raw ONNX graph to the run; returns its model URI."""
        ...

    def log_pyfunc(
        self, onnx_path: Path, run_id: str, experiment_id: str | None, int8_path: Path | None
    ) -> tuple[str, str | None]:
        """Log the servable pyfunc to the run; returns its model URI and logged-model id."""
        ...

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
        """Register the logged pyfunc as a new version; returns the registered model's name and the version.

        ``data_tags``: the run's ``data`` and ``data_fingerprint`` tags, as the tracker set them."""
        ...


def queue_params(writer: ResilientWriter, client: Any, run: RunHandle | str, params: dict[str, Any], what: str) -> None:
    """Queue ``params`` for ``run`` in batches MLflow accepts (keys cut to its 250-character limit)."""
    from mlflow.entities import Param

    items = [Param(k[:250], param_value(v)) for k, v in sorted(params.items())]
    for start in range(0, len(items), PARAMS_PER_REQUEST):
        chunk = items[start : start + PARAMS_PER_REQUEST]

        def send(chunk: list[Any] = chunk) -> None:
            client.log_batch(run_id_of(run), params=chunk)

        writer.submit(f"params of {what}", send)


@dataclass(frozen=True)
class ChildRunContext:
    """Everything a child run uses of its command's parent run; built by the session once the parent started."""

    client: Any  # an MlflowClient on the session's store (registry on the same store)
    writer: ResilientWriter  # every write of the command goes through it, in order
    experiment_id: str
    parent_run_id: str
    env_tags: dict[str, str]  # git commit, versions, user: on every run of the command
    data_root: str | None  # the data root the user gave (redacted), the `data` tag of every child run
    register: bool  # register a version when the run finishes
    publisher: ModelPublisher

    def log_params(self, run: RunHandle | str, params: dict[str, Any], what: str) -> None:
        queue_params(self.writer, self.client, run, params, what)
