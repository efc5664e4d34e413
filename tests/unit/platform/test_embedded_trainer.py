"""The embedded Ray's trainer leaves out the helper actors a one-machine run without Ray Datasets never uses;
a cluster's trainer keeps every one of Ray Train's callbacks."""

from __future__ import annotations

from pathlib import Path

from adkd.platform.cluster.driver import _trainer_class


def _callbacks(address: str | None, tmp_path: Path) -> set[str]:
    from ray.train import RunConfig, ScalingConfig

    trainer = _trainer_class(address)(
        lambda config: None,
        train_loop_config={},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(storage_path=str(tmp_path)),
    )
    return {type(callback).__name__ for callback in trainer._create_default_callbacks()}


def test_embedded_trainer_starts_no_dataset_manager_and_no_placement_group_cleaner(tmp_path: Path) -> None:
    embedded, cluster = _callbacks(None, tmp_path), _callbacks("127.0.0.1:6379", tmp_path)
    assert cluster - embedded == {"DatasetsCallback", "PlacementGroupCleanerCallback"}
    # What the run needs stays: the torch process group, the devices, the user's callbacks.
    assert {"BackendSetupCallback", "AcceleratorSetupCallback", "UserCallbackHandler"} <= embedded
