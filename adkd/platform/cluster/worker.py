"""The worker side of a multi-category run: the event hub actor and the training loop of one category.

Workers train with the single-category engine and push live events (start, epoch metrics, checkpoints) to a small
``EventHub`` actor. Each epoch's ``last.pt`` goes to the run's storage (a local path or ``s3://``) and a restarted
worker resumes from the latest one; the final outputs go there too, so nothing assumes the driver's disk. Where a
run's checkpoints live depends on how it runs (``RunSession``): a one-worker run is a plain Ray task that keeps them
itself (``adkd.platform.cluster.one_worker``), a data-parallel run a Ray Train worker group (``TrainSession``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from adkd.errors import AdkdError
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"  # the engine's resumable state (adkd.pipelines.train.checkpoint.LAST)
RESULT_FILE = "result.json"  # written into the final Ray checkpoint next to the run's outputs
DEFAULT_ENGINE = "adkd.pipelines.train.engine:train_category"

Event = dict[str, Any]  # one worker event: kind, category, attempt, pid, rank and the kind's payload


def make_hub() -> Any:
    """The run's event hub actor: workers push events, the driver drains them."""
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


class RunSession(Protocol):
    """Where one worker's checkpoints and final outputs go, and the worker's place in its group."""

    rank: int
    world_size: int

    def restore(self, dest: Path) -> bool:
        """Copy the latest checkpoint's ``last.pt`` to ``dest``; False when the run has none yet."""
        ...

    def report_epoch(self, epoch: int, metrics: dict[str, float], last: Path | None) -> bool | None:
        """An epoch's metrics and (rank 0) its ``last.pt``: whether the checkpoint is committed (None without one)."""
        ...

    def report_final(self, stage: Path | None, epochs: int) -> None:
        """The run's outputs (rank 0's ``stage`` folder) to the run's storage, where the driver fetches them."""
        ...


class TrainSession:
    """Ray Train's: the rank in the worker group, checkpoints through ``ray.train.report`` (a barrier per epoch)."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def restore(self, dest: Path) -> bool:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return False
        with checkpoint.as_directory() as ckpt_dir:
            source = Path(ckpt_dir) / LAST_CHECKPOINT
            if not source.is_file():
                return False
            # Ray may hand a temporary folder: keep a copy of its own.
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        return True

    def report_epoch(self, epoch: int, metrics: dict[str, float], last: Path | None) -> bool | None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="adkd-ckpt-") as tmp:
            checkpoint = None
            if last is not None and self.rank == 0:
                _link_or_copy(last, Path(tmp) / LAST_CHECKPOINT)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            # Every rank reports once per epoch: ray.train.report is a barrier across the worker group.
            ray.train.report(
                {"epoch": epoch, **metrics}, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch:05d}"
            )
        return _wait_committed() if checkpoint is not None else None

    def report_final(self, stage: Path | None, epochs: int) -> None:
        import ray.train

        final = ray.train.Checkpoint.from_directory(str(stage)) if stage is not None else None
        ray.train.report({"final": 1, "epoch": epochs}, checkpoint=final, checkpoint_dir_name="final")


class _RayReporter(NullCallback):
    """Engine callback inside a Ray worker: events to the hub, each epoch's checkpoint to the session."""

    def __init__(self, hub: Any, category: str, session: RunSession, attempt: int) -> None:
        self.hub = hub
        self.category = category
        self.session = session
        self.attempt = attempt
        self.pending: tuple[Path, int] | None = None
        self.artifacts: list[tuple[str, str]] = []

    def _push(self, kind: str, *, every_rank: bool = False, **payload: Any) -> None:
        """Send an event to the driver; rank 0 speaks for the group unless ``every_rank``."""
        if self.session.rank == 0 or every_rank:
            event = {
                "kind": kind,
                "category": self.category,
                "attempt": self.attempt,
                "pid": os.getpid(),
                "rank": self.session.rank,
            }
            self.hub.push.remote({**event, **payload})

    def on_start(self, config: dict[str, Any]) -> None:
        from adkd.platform.tracking.run_context import RESOLVED_DEVICE, device_tag

        # The device as this worker sees it: the driver's own (perhaps a CPU head node's) would be the wrong one.
        self._push("start", config={**config, RESOLVED_DEVICE: device_tag(config)})

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        # The engine writes last.pt, calls on_checkpoint, then on_epoch_end with that epoch's metrics:
        # hold the checkpoint and report both together. best.pt/model.pt travel with the final outputs.
        if Path(path).name == LAST_CHECKPOINT:
            self.pending = (Path(path), epoch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self._push("epoch", epoch=epoch, metrics=clean)
        pending, self.pending = self.pending, None
        last = pending[0] if pending is not None and pending[1] == epoch else None
        committed = self.session.report_epoch(epoch, clean, last)
        if committed is not None:
            self._push("checkpoint", epoch=epoch, committed=committed)

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

    module, _, name = (spec or DEFAULT_ENGINE).partition(":")
    return getattr(importlib.import_module(module), name)


def _local_data(config: TrainConfig, loop_config: dict[str, Any]) -> TrainConfig:
    """The data made local on this node: s3:// synced into this node's cache (its own settings decide where)."""
    from adkd.platform.storage.data_roots import local_root
    from adkd.settings import load_settings

    cache = Path(loop_config.get("cache_dir") or load_settings().cache_dir)
    root = local_root(config.data, cache, loop_config.get("s3_endpoint_url"), categories=[config.category])
    return config.model_copy(update={"data": str(root)})


def _stage_outputs(run_dir: Path, stage: Path) -> None:
    """Hard-link the run's outputs (everything but the resumable state) into ``stage``."""
    for src in run_dir.rglob("*"):
        if src.is_file() and src.name != LAST_CHECKPOINT and not src.name.startswith("."):
            _link_or_copy(src, stage / src.relative_to(run_dir))


def category_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker loop (one rank of a data-parallel run): ``train_one`` with Ray Train's checkpoints."""
    return train_one(loop_config, TrainSession())


def train_one(loop_config: dict[str, Any], session: RunSession) -> dict[str, Any]:
    """Train one category on this worker, resuming from the session's latest checkpoint if there is one."""
    import json

    import ray

    rank = session.rank
    hub = loop_config["hub"]
    category = loop_config["category"]
    attempt = ray.get(hub.start.remote(category, rank))
    scratch = Path(tempfile.gettempdir()) / "adkd-ray" / loop_config["run_id"] / category / f"rank{rank}"
    # A new attempt starts from a clean folder: another attempt's files are not this one's outputs.
    shutil.rmtree(scratch, ignore_errors=True)
    values = {**loop_config["train_config"], "out_dir": str(scratch)}
    config = TrainConfig.model_validate(values)
    run_dir = scratch / config.run_dir_name()

    # Kept beside (not in) the run folder, whose files are the outputs.
    restored = scratch / f"restored-{LAST_CHECKPOINT}"
    resume_from = restored if session.restore(restored) else None
    resume = resume_from is not None
    reporter = _RayReporter(hub, category, session, attempt)
    reporter._push("worker", every_rank=True, resume=resume, world_size=session.world_size)
    try:
        from adkd.pipelines.train.distributed import DistContext

        with DistContext.detect().agreement():  # a failed sync on one rank fails them all (none waits alone)
            config = _local_data(config, loop_config)
        result = _engine(loop_config.get("engine"))(config, [reporter], resume_from=resume_from)
    except AdkdError as exc:
        # Bad data or settings: retrying cannot help, so it is a result, not a crash.
        reporter._push("failed", error=str(exc))
        shutil.rmtree(scratch, ignore_errors=True)  # nothing of a refused run goes to the driver
        return {"status": "FAILED", "error": str(exc), "category": category, "model": config.model}

    payload = result.to_dict()
    payload["run_dir"] = "."
    for key in ("checkpoint_path", "onnx_path", "int8_path"):  # files the driver finds in the staged outputs
        if payload.get(key):
            path = Path(payload[key])
            payload[key] = str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else path.name
    payload["artifacts"] = [
        (str(Path(p).relative_to(run_dir)) if Path(p).is_relative_to(run_dir) else p, kind)
        for p, kind in reporter.artifacts
    ]
    with tempfile.TemporaryDirectory(prefix="adkd-out-") as tmp:
        stage = Path(tmp) if rank == 0 else None
        if stage is not None:
            _stage_outputs(run_dir, stage)
            (stage / RESULT_FILE).write_text(json.dumps(payload, default=str))
        session.report_final(stage, result.epochs_run)
    reporter._push("done", status=result.status)
    shutil.rmtree(scratch, ignore_errors=True)
    return payload
