"""A one-worker run as a plain Ray task: its checkpoints and outputs kept in the run's storage by the task itself.

A run on one worker exchanges no gradients, so Ray Train's worker group buys it nothing but its fault tolerance,
and costs two processes per run: the run's TrainController and its SynchronizationActor (about 5 CPU-s per
category on a 2-core EPYC, sampled per process during `adkd train --all-categories`, plus Ray Train's own worker
set-up). Here the run is a Ray task asking for the run's resources, retried by Ray (``max_retries``: a crashed
worker process or an exception other than adkd's own errors) up to the run's ``max_failures``, as Ray Train
restarted its group. The fault tolerance stays: every epoch's ``last.pt`` is written under the run's storage path
(local or ``s3://``, through pyarrow's file systems, as Ray Train writes it), then a small ``latest.json`` that
names it, in one write, so a retried task resumes from the last checkpoint that was whole. The final outputs go
to ``<run>/final/``, from where the driver fetches them as it fetched Ray Train's final checkpoint. Two
checkpoints are kept, as before (``CheckpointConfig(num_to_keep=2)``). Data-parallel runs keep Ray Train.
"""

from __future__ import annotations

import functools
import json
import posixpath
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adkd.platform.cluster.worker import LAST_CHECKPOINT, train_one

LATEST = "latest.json"  # {"epoch": N, "dir": "epoch-0000N"}: the last checkpoint written whole
FINAL = "final"
KEEP = 2  # checkpoints kept per run


@dataclass(frozen=True)
class RunStorage:
    """One run's folder in the run storage: ``root`` a path of ``filesystem`` (a pyarrow file system), or a local
    path or URI pyarrow resolves when ``filesystem`` is None."""

    root: str
    name: str
    filesystem: Any = None

    @functools.cached_property
    def _resolved(self) -> tuple[Any, str]:
        """The file system and the run's folder in it, resolved once (``from_uri`` may ask S3 for the region)."""
        from pyarrow import fs

        if self.filesystem is not None:
            return self.filesystem, posixpath.join(self.root, self.name)
        if "://" not in self.root:
            return fs.LocalFileSystem(), str(Path(self.root, self.name))
        filesystem, path = fs.FileSystem.from_uri(self.root)
        return filesystem, posixpath.join(path, self.name)

    def location(self) -> str:
        """The run's folder as a user would name it (``s3://`` kept)."""
        if self.filesystem is None or self.filesystem.type_name == "local":
            return posixpath.join(self.root, self.name)
        return f"{self.filesystem.type_name}://{posixpath.join(self.root, self.name)}"

    def latest(self) -> dict[str, Any] | None:
        from pyarrow import fs

        filesystem, base = self._resolved
        path = posixpath.join(base, LATEST)
        if filesystem.get_file_info(path).type != fs.FileType.File:
            return None
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())

    def restore(self, dest: Path) -> bool:
        """Copy the latest whole checkpoint's ``last.pt`` to ``dest``; False when there is none."""
        latest = self.latest()
        if latest is None:
            return False
        from pyarrow import fs

        filesystem, base = self._resolved
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.copy_files(
            posixpath.join(base, latest["dir"], LAST_CHECKPOINT),
            str(dest),
            source_filesystem=filesystem,
            destination_filesystem=fs.LocalFileSystem(),
        )
        return True

    def save_checkpoint(self, epoch: int, last: Path) -> None:
        """``last`` as epoch ``epoch``'s checkpoint; ``latest.json`` names it once its file is whole."""
        from pyarrow import fs

        filesystem, base = self._resolved
        folder = f"epoch-{epoch:05d}"
        filesystem.create_dir(posixpath.join(base, folder), recursive=True)
        fs.copy_files(
            str(last),
            posixpath.join(base, folder, LAST_CHECKPOINT),
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=filesystem,
        )
        with filesystem.open_output_stream(posixpath.join(base, LATEST)) as stream:
            stream.write(json.dumps({"epoch": epoch, "dir": folder}).encode())
        for old in self._checkpoints(filesystem, base)[:-KEEP]:
            filesystem.delete_dir(posixpath.join(base, old))

    @staticmethod
    def _checkpoints(filesystem: Any, base: str) -> list[str]:
        from pyarrow import fs

        infos = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
        return sorted(
            i.base_name for i in infos if i.type == fs.FileType.Directory and i.base_name.startswith("epoch-")
        )

    def save_final(self, stage: Path) -> None:
        from pyarrow import fs

        filesystem, base = self._resolved
        target = posixpath.join(base, FINAL)
        filesystem.create_dir(target, recursive=True)
        fs.copy_files(str(stage), target, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)

    def fetch_final(self, dest: Path) -> bool:
        """The final outputs into ``dest`` (replaced); False when the run left none."""
        from pyarrow import fs

        filesystem, base = self._resolved
        source = posixpath.join(base, FINAL)
        if filesystem.get_file_info(source).type != fs.FileType.Directory:
            return False
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        fs.copy_files(source, str(dest), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
        return True


class TaskSession:
    """The ``RunSession`` of a one-worker run: rank 0 of 1, checkpoints in ``RunStorage``."""

    rank = 0
    world_size = 1

    def __init__(self, storage: RunStorage) -> None:
        self.storage = storage

    def restore(self, dest: Path) -> bool:
        return self.storage.restore(dest)

    def report_epoch(self, epoch: int, metrics: dict[str, float], last: Path | None) -> bool | None:
        if last is None:
            return None
        self.storage.save_checkpoint(epoch, last)
        return True  # written whole and named by latest.json: a retry resumes from it

    def report_final(self, stage: Path | None, epochs: int) -> None:
        if stage is not None:
            self.storage.save_final(stage)


def category_task(loop_config: dict[str, Any], storage: RunStorage) -> dict[str, Any]:
    """The Ray task of a one-worker run: ``train_one`` with its checkpoints in ``storage``."""
    with kept_torch_threads():
        return train_one(loop_config, TaskSession(storage))


@contextmanager
def kept_torch_threads() -> Iterator[None]:
    """torch's thread count as it was before the block, after it.

    Ray gives a CPU task's worker process to the next task: a run that set its threads (``num_threads``) must not
    leave them to the next run, whose unset ``num_threads`` means the worker's own default (Ray's
    ``OMP_NUM_THREADS``, the CPUs the task asked for).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def task_options(per_worker: dict[str, float], max_failures: int) -> dict[str, Any]:
    """Ray task options for a run's ``resources_per_worker`` (``CPU``, ``GPU``, ``memory``, custom resources)."""
    extra = {k: v for k, v in per_worker.items() if k not in ("CPU", "GPU", "memory")}
    options: dict[str, Any] = {
        "num_cpus": per_worker.get("CPU", 1.0),
        "num_gpus": per_worker.get("GPU", 0.0),
        "max_retries": max_failures,
        "retry_exceptions": True,  # adkd's own errors (bad data or settings) come back as results, not raised
    }
    if "memory" in per_worker:
        options["memory"] = per_worker["memory"]
    if extra:
        options["resources"] = extra
    return options


@dataclass
class TaskOutcome:
    """What a finished task left: its return value and where its final outputs are."""

    return_value: dict[str, Any] | None
    storage: RunStorage


def run_task(
    loop_config: dict[str, Any], storage: RunStorage, per_worker: dict[str, float], max_failures: int
) -> TaskOutcome:
    """Run one category as a Ray task and wait for it (with its retries); raises what its last attempt raised."""
    import ray

    options = task_options(per_worker, max_failures)
    task = _remote_task().options(**options, name=f"adkd-{loop_config['category']}")
    return TaskOutcome(ray.get(task.remote(loop_config, storage)), storage)


@functools.cache
def _remote_task() -> Any:
    """``category_task`` as a Ray remote function, made once per process (the run's threads share it)."""
    import ray

    return ray.remote(category_task)
