"""The Ray side of a multi-category run: the event hub actor and the worker loop of one category.

Workers train with the single-category engine, push live events (start, epoch metrics, checkpoints)
to a small ``EventHub`` actor, report every epoch's ``last.pt`` as a Ray Train checkpoint (a restarted
worker resumes from the latest one) and hand their final outputs to Ray Train's run storage (a local
path or ``s3://``), so nothing assumes the driver's disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    resume_from: Path | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            source = Path(ckpt_dir) / LAST_CHECKPOINT
            if source.is_file():
                # Ray may hand a temporary folder: keep the restored state beside (not in) the run folder.
                resume_from = scratch / f"restored-{LAST_CHECKPOINT}"
                scratch.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, resume_from)
    resume = resume_from is not None
    reporter = _RayReporter(hub, category, rank, attempt)
    reporter._push("worker", every_rank=True, resume=resume, world_size=context.get_world_size())
    try:
        from adkd.pipelines.train.distributed import DistContext

        with DistContext.detect().agreement():  # a failed sync on one rank fails them all (none waits alone)
            config = _local_data(config, loop_config)
        result = _engine(loop_config.get("engine"))(config, [reporter], resume_from=resume_from)
    except AdkdError as exc:
        # Bad data or settings: retrying cannot help, so it is a result, not a crash.
        reporter._push("failed", error=str(exc))
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
        stage = Path(tmp)
        if rank == 0:
            _stage_outputs(run_dir, stage)
            (stage / RESULT_FILE).write_text(json.dumps(payload, default=str))
        final = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
        ray.train.report({"final": 1, "epoch": result.epochs_run}, checkpoint=final, checkpoint_dir_name="final")
    reporter._push("done", status=result.status)
    shutil.rmtree(scratch, ignore_errors=True)
    return payload
