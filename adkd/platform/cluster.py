"""Every category at once on Ray: one Ray Train ``TorchTrainer`` per category, run concurrently.

The driver (this process) owns all MLflow writes. Workers train with the single-category engine,
push live events (start, epoch metrics, checkpoints) to a small ``EventHub`` actor, and hand their
checkpoints and final outputs to Ray Train's run storage (a local path or ``s3://``), so nothing
assumes the driver's disk. The driver drains the hub, feeds a live table and a ``RunSink``
(MLflow when it is given one), then fetches each category's outputs from storage and registers it.

Fault tolerance: every epoch's ``last.pt`` is reported as a Ray checkpoint; ``FailureConfig``
restarts a category's worker group after a crash and the new worker resumes from the latest one.
The driver drops events of epochs it has already seen, so a restart never duplicates metrics, and
only the driver creates runs and registers versions, so there is one of each per category.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adkd.errors import AdkdError, ConfigError, ServiceError
from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.progress import ProgressBoard, ResultRow, log_lines_above_live, write_results

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"  # the engine's resumable state (adkd.pipelines.train.checkpoint.LAST)
RESULT_FILE = "result.json"  # written into the final Ray checkpoint next to the run's outputs
POLL_S = 0.5

Event = dict[str, Any]
EventListener = Callable[[Event], None]


# ----------------------------------------------------------------------------------------------
# Resources and connection


@dataclass(frozen=True)
class CategoryResources:
    """What one category's training asks the cluster for."""

    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers-per-category must be >= 1, got {self.workers}")
        if self.cpus <= 0:
            raise ConfigError(f"--cpus-per-category must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise ConfigError(f"--gpus-per-category must be >= 0, got {self.gpus}")
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ConfigError(f"--gpus-per-category above 1 must be a whole number, got {self.gpus}")

    def per_worker(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus)}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        return out


def _package_dir() -> str:
    import adkd

    return str(Path(adkd.__file__).resolve().parent)


def use_ray_token_if_present() -> None:
    """Send Ray's auth token when one exists (``ray get-auth-token``), as the ``ray`` CLI does.

    Token authentication stays on: a cluster started with it refuses clients without the token.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(
    address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None, verbose: bool = False
) -> dict[str, float]:
    """Start an embedded Ray (no address) or join a cluster; return the cluster's total resources."""
    import ray

    from adkd.platform.quiet import debug_requested, drop_ray_driver_noise

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    verbose = verbose or debug_requested()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    common: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
    }
    try:
        if address:
            use_ray_token_if_present()
            # A real cluster's nodes do not have this checkout: ship the package with the job.
            runtime_env = {"py_modules": [_package_dir()], "excludes": ["__pycache__", "*.pyc"]}
            if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
                runtime_env = {}  # inside `adkd submit`: the job's runtime_env already carries it
            ray.init(address=address, runtime_env=runtime_env or None, **common)
        else:
            if not verbose:
                # Ray turns token authentication on for a new local cluster (kept) and warns that it did.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                drop_ray_driver_noise()
            # "local", not None: None joins whatever `ray start` last left in /tmp/ray (another user's or
            # test's cluster, perhaps already gone); the embedded mode must start its own.
            ray.init(
                address="local",
                num_cpus=int(num_cpus) if num_cpus else None,
                num_gpus=int(num_gpus) if num_gpus is not None else None,
                include_dashboard=False,
                **common,
            )
    except ConnectionError as exc:
        raise ServiceError(
            f"cannot reach the Ray cluster at {address}: {exc}; start one with `ray start --head` "
            "or leave --address/RAY_ADDRESS unset for the embedded local Ray"
        ) from None
    except ValueError as exc:
        raise ServiceError(f"cannot start or join Ray (address={address!r}): {exc}") from None
    return dict(ray.cluster_resources())


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ----------------------------------------------------------------------------------------------
# The event hub: workers push, the driver drains


def _make_hub() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_concurrency=8)
    class EventHub:
        """Collects worker events in arrival order and counts each category's attempts."""

        def __init__(self) -> None:
            self.events: list[Event] = []
            self.starts: dict[tuple[str, int], int] = {}

        def start(self, category: str, rank: int) -> int:
            # Ray Train restarts the whole worker group, so each rank's own start count is the attempt
            # number (a shared count would race between the ranks of one group).
            key = (category, rank)
            self.starts[key] = self.starts.get(key, 0) + 1
            return self.starts[key]

        def push(self, event: Event) -> None:
            self.events.append(event)

        def drain(self) -> list[Event]:
            out, self.events = self.events, []
            return out

    return EventHub.remote()


# ----------------------------------------------------------------------------------------------
# Worker side


class _RayReporter(NullCallback):
    """Engine callback inside a Ray worker: events to the hub, each epoch's checkpoint to Ray Train."""

    def __init__(self, hub: Any, category: str, rank: int, attempt: int) -> None:
        self.hub = hub
        self.category = category
        self.rank = rank
        self.attempt = attempt
        self.pending: tuple[Path, int] | None = None
        self.artifacts: list[tuple[str, str]] = []

    def _push(self, kind: str, *, every_rank: bool = False, **payload: Any) -> None:
        """Send an event to the driver; rank 0 speaks for the group unless ``every_rank``."""
        if self.rank == 0 or every_rank:
            event = {
                "kind": kind,
                "category": self.category,
                "attempt": self.attempt,
                "pid": os.getpid(),
                "rank": self.rank,
            }
            self.hub.push.remote({**event, **payload})

    def on_start(self, config: dict[str, Any]) -> None:
        self._push("start", config=config)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        # The engine writes last.pt, calls on_checkpoint, then on_epoch_end with that epoch's metrics:
        # hold the checkpoint and report both together. best.pt/model.pt travel with the final outputs.
        if Path(path).name == LAST_CHECKPOINT:
            self.pending = (Path(path), epoch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        import ray.train

        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self._push("epoch", epoch=epoch, metrics=clean)
        pending, self.pending = self.pending, None
        with tempfile.TemporaryDirectory(prefix="adkd-ckpt-") as tmp:
            checkpoint = None
            if pending is not None and pending[1] == epoch and self.rank == 0:
                _link_or_copy(pending[0], Path(tmp) / LAST_CHECKPOINT)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            # Every rank reports once per epoch: ray.train.report is a barrier across the worker group.
            ray.train.report({"epoch": epoch, **clean}, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch:05d}")
        if checkpoint is not None:
            self._push("checkpoint", epoch=epoch, committed=_wait_committed())

    def on_artifact(self, path: Path, kind: str) -> None:
        self.artifacts.append((str(path), kind))


def _wait_committed(timeout_s: float = 120.0) -> bool:
    """Block until the controller has registered the reported checkpoint, so a crash resumes from it.

    ``ray.train.report`` returns once the files are in storage; the controller registers them a little
    later. A worker killed in between would restart from the previous checkpoint.
    """
    import ray.train

    try:
        ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=timeout_s
        )
    except Exception:  # an older Ray or a slow controller: training goes on, the event says so
        log.warning("checkpoint not confirmed by Ray Train within %.0f s", timeout_s, exc_info=True)
        return False
    return True


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _engine(spec: str | None) -> Callable[..., TrainResult]:
    """The training function: the real engine, or ``module:function`` with the same signature."""
    import importlib

    module, _, name = (spec or "adkd.pipelines.train.engine:train_category").partition(":")
    return getattr(importlib.import_module(module), name)


def _local_data(config: TrainConfig, loop_config: dict[str, Any]) -> TrainConfig:
    """Data on s3:// is synced into this node's cache first: workers never rely on the driver's disk."""
    if not config.data.startswith("s3://"):
        return config
    from adkd.platform.s3 import resolve_data_root

    cache = Path(loop_config.get("cache_dir") or Path.home() / ".cache" / "adkd")
    root = resolve_data_root(config.data, cache, loop_config.get("s3_endpoint_url"), categories=[config.category])
    return config.model_copy(update={"data": str(root)})


def _stage_outputs(run_dir: Path, stage: Path) -> None:
    """Hard-link the run's outputs (everything but the resumable state) into ``stage``."""
    for src in run_dir.rglob("*"):
        if src.is_file() and src.name != LAST_CHECKPOINT and not src.name.startswith("."):
            _link_or_copy(src, stage / src.relative_to(run_dir))


def category_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker loop: train one category, resuming from Ray's latest checkpoint if there is one."""
    import json

    import ray
    import ray.train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    hub = loop_config["hub"]
    category = loop_config["category"]
    attempt = ray.get(hub.start.remote(category, rank))
    scratch = Path(tempfile.gettempdir()) / "adkd-ray" / loop_config["run_id"] / category / f"rank{rank}"
    if attempt > 1 or ray.train.get_checkpoint() is None:
        shutil.rmtree(scratch, ignore_errors=True)
    values = {**loop_config["train_config"], "out_dir": str(scratch)}
    config = TrainConfig.model_validate(values)
    run_dir = scratch / config.run_dir_name()

    resume = False
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            source = Path(ckpt_dir) / LAST_CHECKPOINT
            if source.is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, run_dir / LAST_CHECKPOINT)
                resume = True
    reporter = _RayReporter(hub, category, rank, attempt)
    reporter._push("worker", every_rank=True, resume=resume, world_size=context.get_world_size())
    try:
        from adkd.pipelines.train.distributed import DistContext

        with DistContext.detect().agreement():  # a failed sync on one rank fails them all (none waits alone)
            config = _local_data(config, loop_config)
        resume_from = run_dir / LAST_CHECKPOINT if resume else None  # the restored Ray checkpoint, copied above
        result = _engine(loop_config.get("engine"))(config, [reporter], resume_from=resume_from)
    except AdkdError as exc:
        # Bad data or settings: retrying cannot help, so it is a result, not a crash.
        reporter._push("failed", error=str(exc))
        return {"status": "FAILED", "error": str(exc), "category": category, "model": config.model}

    payload = result.to_dict()
    payload["run_dir"] = "."
    if result.checkpoint_path:
        cp = Path(result.checkpoint_path)
        payload["checkpoint_path"] = str(cp.relative_to(run_dir)) if cp.is_relative_to(run_dir) else cp.name
    payload["artifacts"] = [
        (str(Path(p).relative_to(run_dir)) if Path(p).is_relative_to(run_dir) else p, kind)
        for p, kind in reporter.artifacts
    ]
    with tempfile.TemporaryDirectory(prefix="adkd-out-") as tmp:
        stage = Path(tmp)
        if rank == 0:
            _stage_outputs(run_dir, stage)
            (stage / RESULT_FILE).write_text(json.dumps(payload, default=str))
        final = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
        ray.train.report({"final": 1, "epoch": result.epochs_run}, checkpoint=final, checkpoint_dir_name="final")
    reporter._push("done", status=result.status)
    shutil.rmtree(scratch, ignore_errors=True)
    return payload


# ----------------------------------------------------------------------------------------------
# Driver side


class RunSink(Protocol):
    """Where the driver sends a multi-category run: MLflow in production, nothing in a dry run."""

    def start(self, configs: dict[str, TrainConfig]) -> None: ...

    def callback(self, category: str) -> TrainCallback: ...

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        """Close the runs; return the registered model version of each category that has one."""
        ...


class NullSink:
    """A sink that records nothing (``--no-tracking``)."""

    def start(self, configs: dict[str, TrainConfig]) -> None:
        return None

    def callback(self, category: str) -> TrainCallback:
        return NullCallback()

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        return {}


class TrackingSink:
    """MLflow through ``adkd.platform.tracking.TrackingSession``: a parent run, a child run per category.

    The session's per-category trackers receive the events the driver replays from the workers;
    the tracker of a finished category exports ONNX, logs the models and registers a version.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.summary: Any = None
        self.presets: dict[str, str] = {}

    def start(self, configs: dict[str, TrainConfig]) -> None:
        self.presets = {c: cfg.preset for c, cfg in configs.items()}
        self.session.start_parent()

    def callback(self, category: str) -> TrainCallback:
        return self.session.child(category, preset=self.presets.get(category))

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        self.summary = self.session.finish()
        return {c: str(v) for c, v in (self.summary.registered or {}).items()}


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
    config: TrainConfig
    callback: TrainCallback
    started: bool = False
    last_epoch: int = -1
    last_checkpoint: int = -1
    attempts: int = 0
    fit_result: Any = None
    fit_error: BaseException | None = None
    done: bool = False
    finished_at: float | None = None


class _Driver:
    """Dispatches hub events to the sink, the board and listeners; one thread, in arrival order."""

    def __init__(
        self, states: dict[str, _CategoryState], board: ProgressBoard, listeners: Sequence[EventListener]
    ) -> None:
        self.states = states
        self.board = board
        self.listeners = listeners

    def dispatch(self, event: Event) -> None:
        state = self.states[event["category"]]
        kind = event["kind"]
        category = event["category"]
        if kind == "start":
            state.attempts = max(state.attempts, event["attempt"])
            total = state.config.epochs + state.config.ae_pretrain_epochs  # the engine counts both phases
            self.board.on_start(category, event["attempt"], total)
            if not state.started:
                state.started = True
                _safe(state.callback.on_start, event.get("config") or state.config.model_dump(mode="json"))
        elif kind == "epoch":
            # After a restart the resumed worker repeats epochs past its checkpoint: keep the first report.
            if event["epoch"] <= state.last_epoch:
                return
            state.last_epoch = event["epoch"]
            self.board.on_epoch(category, event["epoch"], event["metrics"])
            _safe(state.callback.on_epoch_end, event["epoch"], event["metrics"])
        elif kind == "checkpoint":
            if event["epoch"] <= state.last_checkpoint:
                return
            state.last_checkpoint = event["epoch"]
        for listener in self.listeners:
            _safe(listener, event)


def _safe(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a sink or listener problem never stops the other categories
        log.warning("callback %s failed", getattr(fn, "__qualname__", fn), exc_info=True)


def _resolve_local_paths(config: TrainConfig) -> TrainConfig:
    """Workers change directory: make local data and weight paths absolute before shipping the config."""
    update: dict[str, Any] = {}
    if "://" not in config.data:
        update["data"] = str(Path(config.data).expanduser().resolve())
    if config.weights not in ("imagenet", "none") and "://" not in config.weights:
        update["weights"] = str(Path(config.weights).expanduser().resolve())
    return config.model_copy(update=update) if update else config


def _storage_uri(storage_path: str | None, run_dir: Path) -> str:
    if storage_path is None:
        return str((run_dir / "ray").resolve())
    if "://" in storage_path:
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve())


def _storage_filesystem(storage: str, endpoint_url: str | None) -> tuple[str, Any]:
    """Ray Train storage: s3:// with a custom endpoint needs an explicit pyarrow S3 filesystem."""
    if not storage.startswith("s3://") or not endpoint_url:
        return storage, None
    from pyarrow import fs

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    scheme = "https" if endpoint_url.startswith("https") else "http"
    endpoint = endpoint_url.split("://", 1)[-1].rstrip("/")
    filesystem = fs.S3FileSystem(endpoint_override=endpoint, scheme=scheme, region=region)
    return storage[len("s3://") :], filesystem


def _fetch_outputs(fit_result: Any, dest: Path) -> dict[str, Any] | None:
    """Copy the final checkpoint (the run's outputs) from run storage to ``dest``; return result.json."""
    import json

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
    if values.get("checkpoint_path"):
        values["checkpoint_path"] = local_dir / values["checkpoint_path"]
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
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_all_categories(
    configs: Sequence[TrainConfig],
    *,
    resources: CategoryResources | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    runs_dir: str | Path = "adkd-runs",
    run_id: str | None = None,
    storage_path: str | None = None,
    max_failures: int = 2,
    sink: RunSink | None = None,
    listeners: Sequence[EventListener] = (),
    console: Any = None,
    live: bool = True,
    verbose: bool = False,
    engine: str | None = None,
    s3_endpoint_url: str | None = None,
    cache_dir: str | None = None,
    keys: Sequence[str] | None = None,
) -> AllCategoriesResult:
    """Train every config (one per category) concurrently on Ray; one category's failure spares the rest.

    ``address`` None starts an embedded Ray with ``num_cpus``/``num_gpus`` (default: this machine's).
    ``storage_path`` (local or ``s3://``) receives per-epoch checkpoints and final outputs; default
    ``<runs_dir>/all-<run_id>/ray``. Results land in ``<runs_dir>/all-<run_id>/`` as
    ``results.md`` / ``results.json`` and one folder per category. ``engine`` (``module:function``)
    replaces ``train_category`` (benchmarks); it must be importable on the workers. ``keys`` names the
    runs when one category trains several times (``adkd benchmark``: row x category); default the categories.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from rich.console import Console
    from rich.live import Live

    if not configs:
        raise ConfigError("no categories to train: pass --categories a,b or --all-categories with a data root")
    names = list(keys) if keys is not None else [c.category for c in configs]
    if len(names) != len(configs):
        raise ConfigError(f"{len(names)} run keys for {len(configs)} configs; give one key per config")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"category listed twice: {', '.join(duplicates)}; name each category once")
    resources = resources or CategoryResources()
    _check_distributed(resources, engine)
    if max_failures < 0:
        raise ConfigError(f"--max-failures must be >= 0, got {max_failures}")
    sink = sink or NullSink()
    console = console or Console()
    run_id = run_id or new_run_id()
    run_dir = (Path(runs_dir) / f"all-{run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage_uri(storage_path, run_dir)
    storage_root, storage_fs = _storage_filesystem(storage, s3_endpoint_url)
    configs = [_resolve_local_paths(c) for c in configs]

    cluster = connect(address, num_cpus=num_cpus, num_gpus=num_gpus, verbose=verbose)
    _check_fits(resources, cluster)
    hub = _make_hub()
    sink.start(dict(zip(names, configs, strict=True)))
    states = {n: _CategoryState(config=c, callback=sink.callback(n)) for n, c in zip(names, configs, strict=True)}
    board = ProgressBoard(names, epochs=None)
    driver = _Driver(states, board, listeners)
    started = time.monotonic()

    def fit(category: str) -> None:
        state = states[category]
        trainer = TorchTrainer(
            category_worker,
            train_loop_config={
                "hub": hub,
                "category": category,
                "run_id": run_id,
                "train_config": state.config.model_dump(mode="json"),
                "engine": engine,
                "s3_endpoint_url": s3_endpoint_url,
                "cache_dir": cache_dir,
            },
            scaling_config=ScalingConfig(
                num_workers=resources.workers,
                use_gpu=resources.gpus > 0,
                resources_per_worker=resources.per_worker(),
            ),
            run_config=RunConfig(
                name=f"{run_id}-{category}",
                storage_path=storage_root,
                storage_filesystem=storage_fs,
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            state.fit_result = trainer.fit()
        except BaseException as exc:  # the category failed after its retries; the others go on
            state.fit_error = exc
        finally:
            state.finished_at = time.monotonic()

    threads = {c: threading.Thread(target=fit, args=(c,), name=f"adkd-fit-{c}", daemon=True) for c in names}
    for thread in threads.values():
        thread.start()

    results: dict[str, TrainResult] = {}

    def pump() -> None:
        for event in ray.get(hub.drain.remote()):
            driver.dispatch(event)
        for category, thread in threads.items():
            state = states[category]
            if not thread.is_alive() and not state.done:
                state.done = True
                for event in ray.get(hub.drain.remote()):
                    driver.dispatch(event)
                result = _finish(category, state, run_dir, started)
                board.on_end(category, result.status)
                results[category] = result

    if live:
        terminal = (sys.stdout, sys.stderr)
        with (
            Live(board.render(), console=console, refresh_per_second=4, transient=False) as view,
            log_lines_above_live(terminal),
        ):
            while len(results) < len(names):
                pump()
                view.update(board.render())
                time.sleep(POLL_S)
            view.update(board.render())
    else:
        while len(results) < len(names):
            pump()
            time.sleep(POLL_S)

    ordered = [results[c] for c in names]
    try:
        versions = sink.end(ordered) or {}
    except Exception:
        log.warning("closing the tracking runs failed", exc_info=True)
        versions = {}
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
        "address": address or "local",
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


def _check_distributed(resources: CategoryResources, engine: str | None) -> None:
    """Several workers per category only help an engine that shards batches and averages gradients.

    Ray Train sets up the process group (gloo/NCCL) for every worker; the engine says it uses it by
    exposing ``SUPPORTS_DISTRIBUTED = True`` (the default engine does: data-parallel, ``batch_size``
    per worker). Without that, N workers would train N identical copies.
    """
    if resources.workers == 1:
        return
    import importlib

    module = (engine or "adkd.pipelines.train.engine:train_category").partition(":")[0]
    if not getattr(importlib.import_module(module), "SUPPORTS_DISTRIBUTED", False):
        raise ConfigError(
            f"--workers-per-category {resources.workers}: the training engine ({module}) does not do "
            "data-parallel training, so extra workers would train identical copies; use 1 worker per "
            "category (categories already train in parallel) and give it more --cpus/--gpus-per-category"
        )
    if 0 < resources.gpus < 1:
        raise ConfigError(
            f"--workers-per-category {resources.workers} with --gpus-per-category {resources.gpus:g}: the workers "
            "of one category could share a GPU, which NCCL refuses; give each worker a whole GPU or use 1 worker"
        )


def _check_fits(resources: CategoryResources, cluster: dict[str, float]) -> None:
    """Refuse a per-category request no node set could ever satisfy (Ray would wait forever)."""
    need_cpu = resources.cpus * resources.workers
    need_gpu = resources.gpus * resources.workers
    have_cpu = cluster.get("CPU", 0.0)
    have_gpu = cluster.get("GPU", 0.0)
    if need_cpu > have_cpu + 1e-9:
        raise ConfigError(
            f"one category asks for {need_cpu:g} CPUs but the Ray cluster has {have_cpu:g}; "
            "lower --cpus-per-category or --workers-per-category"
        )
    if need_gpu > have_gpu + 1e-9:
        raise ConfigError(
            f"one category asks for {need_gpu:g} GPUs but the Ray cluster has {have_gpu:g}; "
            "set --gpus-per-category 0 (CPU) or use a cluster with GPUs"
        )


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
                    _safe(state.callback.on_artifact, Path(path), kind)
    if not math.isfinite(result.duration_s) or result.duration_s <= 0:
        result.duration_s = duration
    _safe(state.callback.on_end, result)
    return result
