"""Every category at once on Ray: one Ray task per one-worker category, one Ray Train trainer per data-parallel one.

The driver (this process) starts every category's run (``adkd.platform.cluster.one_worker.run_task``, or
``make_trainer`` over ``adkd.platform.cluster.worker.category_worker`` for several workers), drains the workers'
events from the hub and passes them to its listeners (MLflow tracking, a live table:
``adkd.platform.cluster.listeners.RunListener``), then fetches each category's outputs from run storage and
writes the results files.

Fault tolerance: every epoch's ``last.pt`` goes to the run's storage; Ray retries a crashed one-worker task
(``FailureConfig`` restarts a data-parallel worker group) and the new worker resumes from the latest checkpoint.
The driver drops events of epochs it has already seen, so a restart never duplicates metrics, and
only the driver's listeners create runs and register versions, so there is one of each per category.
"""

from __future__ import annotations

import inspect
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.cluster.connection import connect, storage_filesystem, storage_uri
from adkd.platform.cluster.listeners import RunListener
from adkd.platform.cluster.one_worker import RunStorage, TaskOutcome, run_task
from adkd.platform.cluster.resources import (
    CategoryResources,
    check_distributed,
    check_fits,
    check_memory,
    memory_request,
)
from adkd.platform.cluster.results import ResultRow, write_results
from adkd.platform.cluster.worker import RESULT_FILE, Event, category_worker, make_hub

log = logging.getLogger(__name__)

POLL_S = 0.5


@dataclass(frozen=True)
class RayRunOptions:
    """How and where a multi-category run trains; the defaults start an embedded Ray on this machine.

    ``address`` None starts an embedded Ray with ``num_cpus``/``num_gpus`` (default: this machine's).
    ``storage_path`` (local or ``s3://``) receives per-epoch checkpoints and final outputs; default
    ``<runs_dir>/all-<run_id>/ray``. ``max_failures`` is how often a crashed category restarts from
    its last checkpoint. ``engine`` (``module:function``) replaces ``train_category`` (benchmarks); it
    must be importable on the workers. ``s3_endpoint_url``/``cache_dir`` let workers sync ``s3://`` data.
    """

    resources: CategoryResources = field(default_factory=CategoryResources)
    address: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    runs_dir: str | Path = "adkd-runs"
    run_id: str | None = None
    storage_path: str | None = None
    max_failures: int = 2
    engine: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    cache_dir: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.max_failures < 0:
            raise ConfigError(
                f"max failures (restarts of a crashed category) must be >= 0, got {self.max_failures}; "
                "use 0 for no restarts"
            )


@dataclass
class AllCategoriesResult:
    """What a multi-category run produced."""

    run_dir: Path
    results: list[TrainResult]
    rows: list[ResultRow]
    markdown_path: Path
    json_path: Path
    wall_s: float
    attempts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r.category for r in self.results if r.status != "FINISHED"]


@dataclass
class _CategoryState:
    """What the driver knows of one category: its config, its listeners' callbacks, its fit outcome."""

    config: TrainConfig
    callbacks: list[TrainCallback]
    started: bool = False
    last_epoch: int = -1
    last_checkpoint: int = -1
    attempts: int = 0
    fit_result: Any = None
    fit_error: BaseException | None = None
    done: bool = False
    finished_at: float | None = None


class _Driver:
    """Dispatches hub events to the listeners; one thread, in arrival order."""

    def __init__(self, states: dict[str, _CategoryState], listeners: Sequence[RunListener]) -> None:
        self.states = states
        self.listeners = listeners

    def dispatch(self, event: Event) -> None:
        state = self.states[event["category"]]
        kind = event["kind"]
        if kind == "start":
            state.attempts = max(state.attempts, event["attempt"])
            if not state.started:
                state.started = True
                config = event.get("config") or state.config.model_dump(mode="json")
                for callback in state.callbacks:
                    _safe(callback.on_start, config)
        elif kind == "epoch":
            # After a restart the resumed worker repeats epochs past its checkpoint: keep the first report.
            if event["epoch"] <= state.last_epoch:
                return
            state.last_epoch = event["epoch"]
            for callback in state.callbacks:
                _safe(callback.on_epoch_end, event["epoch"], event["metrics"])
        elif kind == "checkpoint":
            if event["epoch"] <= state.last_checkpoint:
                return
            state.last_checkpoint = event["epoch"]
        for listener in self.listeners:
            _safe(listener.event, event)


def _safe(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a listener problem never stops the other categories
        log.warning("callback %s failed", getattr(fn, "__qualname__", fn), exc_info=True)


def run_all_categories(
    configs: Sequence[TrainConfig],
    options: RayRunOptions | None = None,
    listeners: Sequence[RunListener] = (),
    keys: Sequence[str] | None = None,
) -> AllCategoriesResult:
    """Train every config (one per category) concurrently on Ray; one category's failure spares the rest.

    Results land in ``<runs_dir>/all-<run_id>/`` as ``results.md`` / ``results.json`` and one folder
    per category. ``listeners`` receive every category's events (tracking, a live table). ``keys``
    names the runs when one category trains several times (``adkd benchmark``: row x category);
    default the categories.
    """
    import ray

    options = options or RayRunOptions()
    if not configs:
        raise ConfigError("no categories to train: name at least one category, or point the data root at some")
    names = list(keys) if keys is not None else [c.category for c in configs]
    if len(names) != len(configs):
        raise ConfigError(f"{len(names)} run keys for {len(configs)} configs; give one key per config")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"category listed twice: {', '.join(duplicates)}; name each category once")
    resources = options.resources
    check_distributed(resources, options.engine)
    run_id = options.run_id or new_run_id()
    run_dir = (Path(options.runs_dir) / f"all-{run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = storage_uri(options.storage_path, run_dir)
    storage_root, storage_fs = storage_filesystem(storage, options.s3_endpoint_url, options.s3_region)
    configs = [_resolve_local_paths(c) for c in configs]

    cluster = connect(options.address, num_cpus=options.num_cpus, num_gpus=options.num_gpus, verbose=options.verbose)
    check_fits(resources, cluster)
    check_memory(list(configs), cluster)
    hub = make_hub()
    by_key = dict(zip(names, configs, strict=True))
    for listener in listeners:
        listener.start(by_key)
    states = {n: _CategoryState(config=c, callbacks=[lis.callback(n) for lis in listeners]) for n, c in by_key.items()}
    driver = _Driver(states, listeners)
    started = time.monotonic()

    def fit(category: str) -> None:
        state = states[category]
        loop_config = {
            "hub": hub,
            "category": category,
            "run_id": run_id,
            "train_config": state.config.model_dump(mode="json"),
            "engine": options.engine,
            "s3_endpoint_url": options.s3_endpoint_url,
            "cache_dir": options.cache_dir,
        }
        # A tiled run also asks for the memory its full-resolution images take.
        per_worker = {**resources.per_worker(), **memory_request(state.config)}
        name = f"{run_id}-{category}"
        try:
            if resources.workers == 1:
                storage = RunStorage(storage_root, name, storage_fs)
                state.fit_result = run_task(loop_config, storage, per_worker, options.max_failures)
            else:
                state.fit_result = _fit_group(
                    options, resources.workers, loop_config, per_worker, name, storage_root, storage_fs
                )
        except BaseException as exc:  # the category failed after its retries; the others go on
            state.fit_error = exc
        finally:
            state.finished_at = time.monotonic()

    threads = {c: threading.Thread(target=fit, args=(c,), name=f"adkd-fit-{c}", daemon=True) for c in names}
    for thread in threads.values():
        thread.start()

    results: dict[str, TrainResult] = {}
    while len(results) < len(names):
        for event in ray.get(hub.drain.remote()):
            driver.dispatch(event)
        for category, thread in threads.items():
            state = states[category]
            if not thread.is_alive() and not state.done:
                state.done = True
                for event in ray.get(hub.drain.remote()):
                    driver.dispatch(event)
                results[category] = _finish(category, state, run_dir, started)
        if len(results) < len(names):
            time.sleep(POLL_S)

    ordered = [results[c] for c in names]
    versions: dict[str, str] = {}
    for listener in listeners:
        try:
            versions.update(listener.end(ordered) or {})
        except Exception:
            log.warning("closing the listener %s failed", type(listener).__name__, exc_info=True)
    rows = [
        ResultRow(
            category=r.category,
            model=r.model,
            status=r.status,
            metrics={k: v for k, v in r.metrics.items() if isinstance(v, int | float)},
            minutes=r.duration_s / 60.0,
            registered_version=versions.get(r.category),
            epochs_run=r.epochs_run,
            attempts=max(states[n].attempts, 1),
            error=r.error,
        )
        for n, r in zip(names, ordered, strict=True)
    ]
    wall_s = time.monotonic() - started
    extra = {
        "run_id": run_id,
        "storage_path": storage,
        "address": options.address or "local",
        "resources_per_category": {"workers": resources.workers, "cpus": resources.cpus, "gpus": resources.gpus},
        "wall_s": wall_s,
    }
    md_path, json_path = write_results(run_dir, rows, extra)
    return AllCategoriesResult(
        run_dir=run_dir,
        results=ordered,
        rows=rows,
        markdown_path=md_path,
        json_path=json_path,
        wall_s=wall_s,
        attempts={c: max(s.attempts, 1) for c, s in states.items()},
    )


def _fit_group(
    options: RayRunOptions,
    workers: int,
    loop_config: dict[str, Any],
    per_worker: dict[str, float],
    name: str,
    storage_root: str,
    storage_fs: Any,
) -> Any:
    """A data-parallel category: a Ray Train worker group, checkpoints and restarts by Ray Train."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    trainer = make_trainer(
        options.address,
        workers,
        category_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=per_worker.get("GPU", 0) > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_root,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=options.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def make_trainer(address: str | None, workers: int, train_fn: Any, **kwargs: Any) -> Any:
    """The Ray Train trainer of a data-parallel run: the ``TorchTrainer`` (NCCL on GPUs, gloo on CPUs).

    Without the helper actors such a run never uses (``adkd.platform.cluster.embedded``): on the embedded Ray all
    of them, on a cluster the Ray Datasets one. One-worker runs never get here (``one_worker.run_task``).
    """
    if workers < 2:
        raise ValueError(f"a Ray Train worker group is for data-parallel runs (2 or more workers), got {workers}")
    # Imported here: ray.train.torch imports torch, which a driver of one-worker runs never needs.
    from ray.train.torch import TorchTrainer

    from adkd.platform.cluster.embedded import cluster_trainer, embedded_trainer

    trimmed = cluster_trainer if address else embedded_trainer
    return trimmed(TorchTrainer)(train_fn, **kwargs)


def _finish(category: str, state: _CategoryState, run_dir: Path, started: float) -> TrainResult:
    """Turn a category's fit outcome into a TrainResult with local paths, replaying artifacts."""
    duration = (state.finished_at or time.monotonic()) - started
    local_dir = run_dir / category
    if state.fit_error is not None:
        result = _failed_result(state.config, local_dir, _error_line(state.fit_error), duration)
    else:
        try:
            payload = _fetch_outputs(state.fit_result, local_dir)
        except Exception as exc:
            payload = {"status": "FAILED", "error": f"cannot fetch outputs from run storage: {_error_line(exc)}"}
        if payload is None:
            payload = getattr(state.fit_result, "return_value", None) or {
                "status": "FAILED",
                "error": "the training ended without a final result",
            }
        if payload.get("status") != "FINISHED":
            error = payload.get("error") or "training did not finish"
            result = _failed_result(state.config, local_dir, error, duration)
        else:
            result, artifacts = _result_from_payload(payload, local_dir)
            for path, kind in artifacts:
                if Path(path).exists():
                    for callback in state.callbacks:
                        _safe(callback.on_artifact, Path(path), kind)
    if not math.isfinite(result.duration_s) or result.duration_s <= 0:
        result.duration_s = duration
    for callback in state.callbacks:
        _safe(callback.on_end, result)
    return result


def _resolve_local_paths(config: TrainConfig) -> TrainConfig:
    """Workers change directory: make local data and weight paths absolute before shipping the config."""
    update: dict[str, Any] = {}
    if "://" not in config.data:
        update["data"] = str(Path(config.data).expanduser().resolve())
    if config.weights not in ("imagenet", "none") and "://" not in config.weights:
        update["weights"] = str(Path(config.weights).expanduser().resolve())
    return config.model_copy(update=update) if update else config


def _fetch_outputs(fit_result: Any, dest: Path) -> dict[str, Any] | None:
    """Copy the final outputs (a task's ``final/``, Ray Train's final checkpoint) from run storage to ``dest``;
    return result.json."""
    import json

    if isinstance(fit_result, TaskOutcome):
        if not fit_result.storage.fetch_final(dest):
            if (fit_result.return_value or {}).get("status") == "FINISHED":
                raise FileNotFoundError(
                    f"the run finished on its node but its outputs are not in the run storage "
                    f"({fit_result.storage.location()}); on a cluster give --storage a path every node sees, "
                    "or s3://bucket/prefix"
                )
            return None
    else:
        checkpoint = getattr(fit_result, "checkpoint", None)
        if checkpoint is None:
            return None
        shutil.rmtree(dest, ignore_errors=True)
        checkpoint.to_directory(str(dest))
    result_file = dest / RESULT_FILE
    if not result_file.is_file():
        return None
    return json.loads(result_file.read_text())


def _result_from_payload(payload: dict[str, Any], local_dir: Path) -> tuple[TrainResult, list[tuple[str, str]]]:
    known = set(inspect.signature(TrainResult).parameters)
    values = {k: v for k, v in payload.items() if k in known}
    values["run_dir"] = local_dir
    for key in ("checkpoint_path", "onnx_path", "int8_path"):
        if values.get(key):
            values[key] = local_dir / values[key]
    artifacts = [(str(local_dir / p), kind) for p, kind in payload.get("artifacts", [])]
    return TrainResult(**values), artifacts


def _failed_result(config: TrainConfig, run_dir: Path, error: str, duration_s: float) -> TrainResult:
    return TrainResult(
        category=config.category,
        model=config.model,
        status="FAILED",
        run_dir=run_dir,
        config=config.model_dump(mode="json"),
        duration_s=duration_s,
        error=error,
    )


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # Ray wraps worker errors in several layers; the last non-empty line names the cause.
    lines = [line.strip() for line in text if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1][:500]


def new_run_id() -> str:
    """A run id that sorts by time: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
