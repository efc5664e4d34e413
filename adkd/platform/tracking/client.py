"""Talking to MLflow: a reachability check before work starts, and a writer that survives outages.

``ResilientWriter`` runs every MLflow write on one background thread, in order. A write that fails
because the server is unreachable stays at the head of the queue and is retried with exponential
backoff, so training never waits on MLflow and nothing is lost while the server is away. Writes that
the server rejects (bad request) are dropped with a warning: retrying them cannot help.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from adkd.errors import ServiceError
from adkd.platform.tracking.redaction import redact_uri
from adkd.platform.tracking.sqlite_schema import seed_new_store, sqlite_file
from adkd.settings import cache_root

log = logging.getLogger(__name__)

# MLflow's own HTTP retries (7 with factor 2) would block a call for minutes; the writer retries instead.
_HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_TRANSIENT_TEXT = (
    "Connection refused",
    "Max retries exceeded",
    "failed with exception",
    "failed with timeout",
    "Connection aborted",
    "RemoteDisconnected",
    "Temporary failure",
    "Bad Gateway",
    "Service Unavailable",
    "TEMPORARILY_UNAVAILABLE",
)


def configure_http_env() -> None:
    """Short HTTP retries inside MLflow calls; an explicit environment setting wins."""
    # MLflow reads these variables itself (in this process and its children); explicit values win.
    for key, value in _HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise ServiceError (one clear line) when the tracking store at ``uri`` cannot be used."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            response = requests.get(url, timeout=timeout_s)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise ServiceError(
                f"MLflow tracking server {redact_uri(uri)} is unreachable ({reason}); start it, fix "
                "MLFLOW_TRACKING_URI / tracking_uri in adkd.toml, or unset it to use the embedded "
                "store under adkd-runs/"
            ) from None
        if response.status_code >= 500 or response.status_code == 404:
            raise ServiceError(
                f"MLflow tracking server {redact_uri(uri)} answered /health with HTTP "
                f"{response.status_code}; check that the URI points at an MLflow server"
            )
        return
    if parsed.scheme == "sqlite":
        db_path = sqlite_file(uri)
        if db_path is not None:
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServiceError(
                    f"cannot create the MLflow store folder {db_path.parent} ({exc.strerror}); "
                    "set runs_dir (ADKD_RUNS_DIR) to a writable folder"
                ) from None
            if not os.access(db_path.parent, os.W_OK):
                raise ServiceError(
                    f"MLflow store folder {db_path.parent} is not writable; set runs_dir (ADKD_RUNS_DIR) "
                    "to a writable folder"
                )


def client_for(tracking_uri: str) -> Any:
    """An MlflowClient on ``tracking_uri`` (registry on the same store), after short retries are set and a
    reachability check (a ServiceError naming the store when it cannot be used)."""
    from mlflow import MlflowClient

    configure_http_env()
    check_reachable(tracking_uri)
    seed_new_store(tracking_uri, cache_root())
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(
    client: Any, name: str, artifact_location: str | None = None, tags: dict[str, str] | None = None
) -> Any:
    """The experiment ``name``: restored when deleted, created (with ``tags``) when missing, also when another
    command creates it at the same moment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment
    try:
        experiment_id = client.create_experiment(name, artifact_location=artifact_location, tags=tags)
    except Exception:
        # Another command created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment
    return client.get_experiment(experiment_id)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means 'server away' (retry later), not 'request rejected'."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        text = str(current)
        if any(marker in text for marker in _TRANSIENT_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass
class _Op:
    description: str
    fn: Callable[[], Any]
    # Metric batches of one run that wait together are merged into one request when the server is back.
    metrics: list[Any] | None = None
    run_handle: Any = None
    attempts: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    result: Any = None


class ResilientWriter:
    """Ordered, retrying, non-blocking MLflow writes on one background thread."""

    def __init__(
        self,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        on_outage: Callable[[str], None] | None = None,
    ) -> None:
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_outage = on_outage
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._pending: list[_Op] = []  # ops taken from the queue but not yet sent, head first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.outages = 0
        self.dropped: list[str] = []
        self.connected = True
        self._outstanding = 0  # submitted and not yet done
        self._last_progress = time.monotonic()  # an attempt started or an op completed
        self._thread = threading.Thread(target=self._loop, name="adkd-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(
        self, description: str, fn: Callable[..., Any], metrics: list[Any] | None = None, run_handle: Any = None
    ) -> _Op:
        op = _Op(description, fn, metrics=metrics, run_handle=run_handle)
        with self._lock:
            self._outstanding += 1
        self._queue.put(op)
        return op

    def submit_metrics(
        self, description: str, send: Callable[[list[Any]], Any], metrics: list[Any], run_handle: Any
    ) -> _Op:
        """Queue a metric batch; ``send(metrics)`` may receive later batches of the same run merged in."""
        return self.submit(description, send, metrics=list(metrics), run_handle=run_handle)

    def call(self, description: str, fn: Callable[[], Any], timeout_s: float | None = None) -> Any:
        """Submit and wait for the result (raises what the call raised)."""
        op = self.submit(description, fn)
        if not op.done.wait(timeout_s):
            raise ServiceError(f"MLflow did not answer '{description}' within {timeout_s:.0f}s")
        if op.error is not None:
            raise op.error
        return op.result

    @property
    def backlog(self) -> int:
        with self._lock:
            return self._outstanding

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted write is sent (or dropped); False after ``timeout_s`` without progress.

        The clock restarts whenever a write starts or completes: a slow but working server (model uploads
        on a loaded box) is waited for; a server that is gone is given up on after ``timeout_s``.
        """
        started = time.monotonic()
        while True:
            if self.backlog == 0:
                return True
            if timeout_s is not None and time.monotonic() >= max(started, self._last_progress) + timeout_s:
                return False
            time.sleep(0.05)

    def pending_descriptions(self) -> list[str]:
        with self._lock:
            ops = list(self._pending) + [op for op in list(self._queue.queue) if op is not None]
        return [op.description for op in ops]

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush (up to ``timeout_s``) and stop the thread; False if writes were left unsent."""
        ok = self.flush(timeout_s)
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=5)
        return ok

    # -- worker -----------------------------------------------------------------------------------
    def _take(self) -> _Op | None:
        with self._lock:
            if self._pending:
                return self._pending[0]
        try:
            op = self._queue.get(timeout=0.1)
        except queue.Empty:
            return None
        if op is None:
            return None
        with self._lock:
            self._pending.append(op)
        return op

    def _merge_waiting_metrics(self, head: _Op) -> None:
        """Fold queued metric batches of the same run that directly follow ``head`` into it."""
        if head.metrics is None:
            return
        while len(head.metrics) < 900:
            with self._lock:
                try:
                    nxt = self._queue.queue[0]
                except IndexError:
                    return
                if nxt is None or nxt.metrics is None or nxt.run_handle is not head.run_handle:
                    return
                self._queue.get_nowait()
                self._outstanding -= 1
            head.metrics.extend(nxt.metrics)
            nxt.done.set()

    def _loop(self) -> None:
        backoff = self.initial_backoff_s
        while not self._stop.is_set():
            op = self._take()
            if op is None:
                continue
            if op.attempts > 0:
                self._merge_waiting_metrics(op)
            if self.connected:
                self._last_progress = time.monotonic()
            try:
                op.result = op.fn(op.metrics) if op.metrics is not None else op.fn()
            except BaseException as exc:  # every failure is handled here; the thread must not die
                op.attempts += 1
                if is_transient(exc):
                    if self.connected:
                        self.connected = False
                        self.outages += 1
                        log.warning("MLflow unreachable (%s); buffering writes and retrying", op.description)
                        if self.on_outage is not None:
                            self.on_outage(op.description)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                log.warning("MLflow rejected '%s': %s; dropped", op.description, exc)
                self.dropped.append(f"{op.description}: {exc}")
                op.error = exc
            else:
                if not self.connected:
                    log.warning("MLflow reachable again; sending buffered writes")
                self.connected = True
                backoff = self.initial_backoff_s
            with self._lock:
                self._pending.pop(0)
                self._outstanding -= 1
            self._last_progress = time.monotonic()
            op.done.set()


def write_unsent_report(path: Path, uri: str, pending: list[str], extra: dict[str, Any]) -> Path:
    """Record which MLflow writes never reached the server, beside the run's local results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"tracking_uri": redact_uri(uri), "unsent": pending, **extra}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
