"""The trainer of a data-parallel Ray run: on the embedded Ray none of the helper actors a one-machine run without
Ray Datasets never uses; a cluster's trainer keeps every one of Ray Train's callbacks but the Ray Datasets one.
(One-worker runs are plain Ray tasks: tests/unit/platform/test_one_worker.py, tests/integration/test_cluster.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adkd.platform.cluster.driver import make_trainer


def _trainer(address: str | None, workers: int, tmp_path: Path) -> Any:
    from ray.train import RunConfig, ScalingConfig

    return make_trainer(
        address,
        workers,
        lambda config: None,
        train_loop_config={},
        scaling_config=ScalingConfig(num_workers=workers),
        run_config=RunConfig(storage_path=str(tmp_path)),
    )


def _callbacks(address: str | None, workers: int, tmp_path: Path) -> set[str]:
    return {type(callback).__name__ for callback in _trainer(address, workers, tmp_path)._create_default_callbacks()}


def test_embedded_trainer_starts_no_dataset_manager_and_no_placement_group_cleaner(tmp_path: Path) -> None:
    embedded, cluster = _callbacks(None, 2, tmp_path), _callbacks("127.0.0.1:6379", 2, tmp_path)
    assert cluster - embedded == {"PlacementGroupCleanerCallback"}
    # What the run needs stays: the backend, the devices, the user's callbacks.
    assert {"BackendSetupCallback", "AcceleratorSetupCallback", "UserCallbackHandler"} <= embedded


def test_no_trainer_starts_a_dataset_manager_and_a_clusters_keeps_the_rest(tmp_path: Path) -> None:
    from ray.train.torch import TorchTrainer

    stock = {
        type(callback).__name__ for callback in TorchTrainer._create_default_callbacks(_trainer("a:1", 2, tmp_path))
    }
    assert "DatasetsCallback" in stock  # Ray Train starts one for every run, datasets or not
    assert stock - _callbacks("127.0.0.1:6379", 2, tmp_path) == {"DatasetsCallback"}
    assert "DatasetsCallback" not in _callbacks(None, 2, tmp_path)


def test_a_one_worker_run_gets_no_worker_group(tmp_path: Path) -> None:
    from ray.train.torch import TorchConfig

    with pytest.raises(ValueError, match="data-parallel runs"):
        _trainer(None, 1, tmp_path)
    assert isinstance(_trainer(None, 2, tmp_path).backend_config, TorchConfig)


def _controller_kwargs(trainer: Any) -> dict[str, Any]:
    """What ``trainer`` hands Ray Train's controller, as ``fit`` builds it (the parent class's launch is not run)."""
    from ray.train.v2._internal.execution.scaling_policy import create_scaling_policy

    seen: dict[str, Any] = {}
    parent = next(
        c
        for c in type(trainer).__mro__
        if "_initialize_and_run_controller" in vars(c) and not c.__name__.startswith("Embedded")
    )
    original = parent._initialize_and_run_controller
    try:
        parent._initialize_and_run_controller = lambda self, **kwargs: seen.update(kwargs)
        trainer._initialize_and_run_controller(scaling_policy=create_scaling_policy(trainer.scaling_config))
    finally:
        parent._initialize_and_run_controller = original
    return seen


@pytest.mark.parametrize("workers", [2, 4])
def test_the_embedded_controller_asks_no_autoscaler_for_resources(workers: int, tmp_path: Path) -> None:
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy, ResizeDecision

    from adkd.platform.cluster.embedded import LocalScalingPolicy

    cluster = _controller_kwargs(_trainer("127.0.0.1:6379", workers, tmp_path))["scaling_policy"]
    embedded = _controller_kwargs(_trainer(None, workers, tmp_path))["scaling_policy"]
    assert type(cluster) is FixedScalingPolicy and type(embedded) is LocalScalingPolicy
    # Ray Train's own policy makes a coordinator client here and sends its first request (which would start Ray).
    embedded.after_controller_start(type("Context", (), {"run_id": "r"})())
    assert embedded._coordinator_client is None
    decision = embedded.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision) and decision.num_workers == workers
