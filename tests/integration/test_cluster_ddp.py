"""One category trained data-parallel by two Ray Train workers: embedded Ray (2 CPUs), gloo, a real MLflow store.

The two ranks shard the images and average gradients; rank 0 alone evaluates and stages the outputs,
so the run yields one result, one final checkpoint and one MLflow child run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.ray_actors import actor_classes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CATEGORY = "weave"
EPOCHS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import ray

    from adkd.pipelines.data.synthetic_dataset import synthesize
    from adkd.pipelines.train.presets import resolve_config
    from adkd.platform.cluster.driver import RayRunOptions, run_all_categories
    from adkd.platform.cluster.listeners import RunListener, TrackingListener
    from adkd.platform.cluster.resources import CategoryResources
    from adkd.platform.registry.publishing import RegistryPublisher
    from adkd.platform.tracking.session import TrackingSession

    assert not ray.is_initialized()  # tests/conftest.py ends any Ray a module leaves running
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "data"
    synthesize(data, categories=[CATEGORY], size=64, n_train=12, n_test=8, seed=0)
    runs_dir = tmp / "runs"
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    config = resolve_config(
        "rd", "cpu-smoke", category=CATEGORY, data=str(data), overrides=[f"epochs={EPOCHS}", "batch_size=4"]
    )
    session = TrackingSession(
        tracking_uri,
        "ddp-test",
        "train",
        publisher=RegistryPublisher(),
        artifact_location=(tmp / "artifacts").as_uri(),
        local_dir=runs_dir,
        register=False,
    )
    events: list[dict[str, Any]] = []

    class Record(RunListener):
        def event(self, event: dict[str, Any]) -> None:
            events.append(event)

    try:
        outcome = run_all_categories(
            [config],
            RayRunOptions(
                resources=CategoryResources(workers=2, cpus=0.5), num_cpus=2, runs_dir=runs_dir, max_failures=0
            ),
            [TrackingListener(session), Record()],
        )
        actors = actor_classes()
    finally:
        ray.shutdown()
    return {"outcome": outcome, "events": events, "tracking_uri": tracking_uri, "actors": actors}


def test_two_workers_train_one_category_into_one_result(run: dict[str, Any]) -> None:
    outcome = run["outcome"]
    assert [r.category for r in outcome.results] == [CATEGORY]
    result = outcome.results[0]
    assert result.status == "FINISHED", result.error
    assert result.epochs_run == EPOCHS
    assert "train/final_loss" in result.metrics and result.thresholds
    assert result.checkpoint_path == outcome.run_dir / CATEGORY / "model.pt" and result.checkpoint_path.is_file()
    # One final checkpoint in Ray's run storage: rank 0 staged the outputs, rank 1 reported none.
    assert len(list((outcome.run_dir / "ray").rglob("model.pt"))) == 1
    assert len(list((outcome.run_dir / CATEGORY).rglob("model.pt"))) == 1


def test_a_data_parallel_run_is_a_ray_train_worker_group(run: dict[str, Any]) -> None:
    # The counterpart of test_cluster's one-worker check: the same listing sees Ray Train's actors here.
    actors = run["actors"]
    assert actors.get("TrainController") == 1 and actors.get("RayTrainWorker") == 2, actors


def test_both_ranks_ran_in_one_group_and_rank_zero_spoke_for_it(run: dict[str, Any]) -> None:
    events = run["events"]
    workers = [e for e in events if e["kind"] == "worker"]
    assert sorted(w["rank"] for w in workers) == [0, 1]
    assert all(w["world_size"] == 2 and w["attempt"] == 1 and not w["resume"] for w in workers)
    assert len({w["pid"] for w in workers}) == 2
    others = [e for e in events if e["kind"] != "worker"]
    assert others and all(e["rank"] == 0 for e in others)
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    assert all("train/loss" in e["metrics"] for e in epochs)
    assert [e["epoch"] for e in events if e["kind"] == "checkpoint"] == list(range(1, EPOCHS + 1))


def test_one_mlflow_child_run_with_each_epoch_once(run: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(run["tracking_uri"])
    experiment = client.get_experiment_by_name("ddp-test")
    children = client.search_runs([experiment.experiment_id], filter_string="tags.category != ''")
    assert len(children) == 1
    child = children[0]
    assert child.data.tags["category"] == CATEGORY and child.info.status == "FINISHED"
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    result = run["outcome"].results[0]  # rank 0's evaluation is the one logged
    assert child.data.metrics["test/image_auroc"] == pytest.approx(result.metrics["test/image_auroc"], abs=1e-12)
    assert Path(run["outcome"].json_path).is_file()
