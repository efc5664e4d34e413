"""Ray Train without the helper actors adkd's data-parallel runs never use: fewer processes per run.

(One-worker runs do not use Ray Train at all: ``adkd.platform.cluster.one_worker``.) ``embedded_trainer(cls)`` is
``cls`` (Ray Train's TorchTrainer) for a Ray that lives and dies with this process on this machine, with no Ray
Datasets and no autoscaler; ``cluster_trainer(cls)`` is ``cls`` for a shared cluster, without the Ray Datasets
helper only. Each run's TrainController unpickles its scaling policy from here, so this module imports nothing but
Ray.
"""

from __future__ import annotations

import functools
from typing import Any

from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy


class LocalScalingPolicy(FixedScalingPolicy):
    """Ray Train's fixed worker group, without registering it with an autoscaler.

    Ray Train's policy sends every run's resources to an AutoscalingCoordinator actor (started by the first
    request, one per cluster, refreshed every 20 s) that only an autoscaling cluster reads. On the embedded Ray
    that actor was a process of its own (1.5 CPU-s per `adkd train --all-categories`, sampled per process) and a
    call from every controller, for a cluster that is this machine and cannot grow.
    """

    def after_controller_start(self, train_run_context: Any) -> None:
        return None

    def _maybe_send_resource_request(self) -> None:
        return None

    def _send_resource_request(self) -> None:
        return None


@functools.cache
def embedded_trainer(trainer: type) -> type:
    """``trainer`` without the DatasetsCallback, the PlacementGroupCleanerCallback and the autoscaler requests.

    Ray Train starts a DatasetManager actor for every run (also one without Ray Datasets: adkd reads its data
    itself) and a detached PlacementGroupCleaner that frees the run's resources should its controller die
    while the cluster lives on. The embedded Ray lives and dies with this process, and there are no datasets,
    so both are processes that only cost: about 3.5 CPU-s per category (sampled per process during
    `adkd train --all-categories`, 39.7 against 32.7 CPU-s for two categories). Its fixed scaling policy becomes
    ``LocalScalingPolicy``. A cluster's trainer keeps all of them.
    """
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    def _initialize_and_run_controller(self: Any, **controller_kwargs: Any) -> Any:
        policy = controller_kwargs.get("scaling_policy")
        if type(policy) is FixedScalingPolicy:  # an elastic policy (not used by adkd) is left as it is
            controller_kwargs["scaling_policy"] = LocalScalingPolicy(policy.scaling_config)
        return trainer._initialize_and_run_controller(self, **controller_kwargs)

    return _without_callbacks(
        trainer,
        "Embedded",
        (DatasetsCallback, PlacementGroupCleanerCallback),
        _initialize_and_run_controller=_initialize_and_run_controller,
    )


@functools.cache
def cluster_trainer(trainer: type) -> type:
    """``trainer`` without the DatasetsCallback, for a shared cluster.

    adkd reads its data itself and never hands Ray Train a dataset, so the DatasetManager actor the callback
    starts for every run only costs a process per category (2 CPU-s each, sampled per process on a 2-node
    `ray start` cluster). The PlacementGroupCleaner, the preemption watcher and the autoscaler requests stay:
    on a cluster that outlives the driver, or grows, they do their work.
    """
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    return _without_callbacks(trainer, "Cluster", (DatasetsCallback,))


def _without_callbacks(trainer: type, prefix: str, unused: tuple[type, ...], **members: Any) -> type:
    """A subclass ``<prefix><trainer>`` whose default callbacks leave out instances of ``unused``."""

    def _create_default_callbacks(self: Any) -> list[Any]:
        return [cb for cb in trainer._create_default_callbacks(self) if not isinstance(cb, unused)]

    return type(
        f"{prefix}{trainer.__name__}", (trainer,), {"_create_default_callbacks": _create_default_callbacks, **members}
    )
