"""`train --all-categories` on an in-process local Ray (2 CPUs): real Ray Train workers, real MLflow store.

One run trains two synthetic categories at 64 px at once plus one category whose data fails
validation. During the run the test kills one category's training worker process (SIGKILL by PID)
right after its first checkpoint. The tests below check what that single run left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ray_actors import actor_classes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GOOD = ("weave", "dots")
BROKEN = "broken"
KILLED = "dots"
EPOCHS = {"weave": 2, "dots": 4, BROKEN: 2}  # the killed one runs longer so the kill lands mid-run


def _make_data(root: Path) -> None:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    synthesize(root, categories=list(GOOD), size=64, n_train=16, n_test=12, seed=0)
    # A copy of weave with one defect mask deleted: the data gate must refuse it.
    shutil.copytree(root / "weave", root / BROKEN)
    masks = sorted((root / BROKEN / "ground_truth").rglob("*.png"))
    masks[0].unlink()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import ray

    from adkd.pipelines.train.presets import resolve_config
    from adkd.platform.cluster.driver import RayRunOptions, run_all_categories
    from adkd.platform.cluster.listeners import RunListener, TrackingListener
    from adkd.platform.cluster.resources import CategoryResources
    from adkd.platform.registry.publishing import RegistryPublisher
    from adkd.platform.tracking.session import TrackingSession

    assert not ray.is_initialized()  # tests/conftest.py ends any Ray a module leaves running
    tmp = tmp_path_factory.mktemp("cluster")
    data = tmp / "data"
    _make_data(data)
    runs_dir = tmp / "runs"
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    configs = [
        resolve_config("rd", "cpu-smoke", category=c, data=str(data), overrides=[f"epochs={EPOCHS[c]}"])
        for c in (*GOOD, BROKEN)
    ]
    session = TrackingSession(
        tracking_uri,
        "cluster-test",
        "train",
        publisher=RegistryPublisher(),
        artifact_location=(tmp / "artifacts").as_uri(),
        local_dir=runs_dir,
    )
    events: list[dict[str, Any]] = []
    killed: dict[str, int] = {}

    class KillAfterFirstCheckpoint(RunListener):
        def event(self, event: dict[str, Any]) -> None:
            events.append(event)
            # A "checkpoint" event means Ray Train has committed it: a restart must resume from it.
            if event["category"] == KILLED and event["kind"] == "checkpoint" and not killed:
                killed["pid"], killed["epoch"], killed["committed"] = event["pid"], event["epoch"], event["committed"]
                os.kill(event["pid"], signal.SIGKILL)

    try:
        outcome = run_all_categories(
            configs,
            RayRunOptions(resources=CategoryResources(cpus=0.5), num_cpus=2, runs_dir=runs_dir, max_failures=2),
            [TrackingListener(session), KillAfterFirstCheckpoint()],
        )
        actors = actor_classes()
    finally:
        ray.shutdown()
    return {"outcome": outcome, "events": events, "killed": killed, "tracking_uri": tracking_uri, "actors": actors}


def _client(run: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(run["tracking_uri"], registry_uri=run["tracking_uri"])


def _child_runs(run: dict[str, Any]) -> dict[str, list[Any]]:
    client = _client(run)
    experiment = client.get_experiment_by_name("cluster-test")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.category != ''", max_results=100)
    out: dict[str, list[Any]] = {}
    for r in runs:
        out.setdefault(r.data.tags["category"], []).append(r)
    return out


def test_the_categories_train_in_parallel_and_finish(run: dict[str, Any]) -> None:
    outcome = run["outcome"]
    status = {r.category: r.status for r in outcome.results}
    assert status == {"weave": "FINISHED", "dots": "FINISHED", BROKEN: "FAILED"}
    for result in outcome.results:
        if result.status == "FINISHED":
            assert result.epochs_run == EPOCHS[result.category]
            assert (result.run_dir / "model.pt").is_file()  # fetched from Ray run storage
    # The categories overlapped in time: every good category had started before any of them ended.
    kinds = [(e["category"], e["kind"]) for e in run["events"]]
    first_done = min(i for i, (c, k) in enumerate(kinds) if k == "done")
    started = {c for c, k in kinds[:first_done] if k == "start"}
    assert set(GOOD) <= started


def test_one_child_run_and_one_registered_version_per_category(run: dict[str, Any]) -> None:
    children = _child_runs(run)
    assert sorted(children) == sorted((*GOOD, BROKEN))
    client = _client(run)
    for category in GOOD:
        assert len(children[category]) == 1, f"{category}: {len(children[category])} runs"
        child = children[category][0]
        assert child.info.status == "FINISHED"
        result = next(r for r in run["outcome"].results if r.category == category)  # its metrics, as logged
        assert child.data.metrics["test/image_auroc"] == pytest.approx(result.metrics["test/image_auroc"], abs=1e-12)
        assert child.data.tags["mlflow.parentRunId"]
        # Resolved by the worker, which had no GPU (CategoryResources(cpus=0.5)) whatever the driver's machine has.
        assert child.data.tags["device"] == "cpu" and "resolved_device" not in child.data.params
        assert child.data.params["device"] == "auto"
        versions = client.search_model_versions(f"name='adkd-{category}'")
        assert [str(v.version) for v in versions] == ["1"]
        assert versions[0].run_id == child.info.run_id
    parents = {r.data.tags["mlflow.parentRunId"] for c in GOOD for r in children[c]}
    assert len(parents) == 1


def test_killed_worker_resumes_from_checkpoint_without_duplicates(run: dict[str, Any]) -> None:
    killed = run["killed"]
    assert killed, "the kill listener never saw a checkpoint of the killed category"
    assert killed["committed"] is True
    attempts = run["outcome"].attempts
    assert attempts[KILLED] >= 2 and attempts["weave"] == 1
    workers = [e for e in run["events"] if e["category"] == KILLED and e["kind"] == "worker"]
    assert workers[0]["resume"] is False
    resumed = [w for w in workers if w["attempt"] > 1]
    assert resumed and resumed[0]["resume"] is True and resumed[0]["pid"] != killed["pid"]
    # The restarted worker continued after the checkpoint instead of starting over at epoch 1.
    epochs = [e for e in run["events"] if e["category"] == KILLED and e["kind"] == "epoch"]
    after_restart = [e["epoch"] for e in epochs if e["attempt"] > 1]
    assert after_restart and after_restart[0] > killed["epoch"]
    assert after_restart[-1] == EPOCHS[KILLED]
    child = _child_runs(run)[KILLED][0]
    history = _client(run).get_metric_history(child.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS[KILLED] + 1))
    assert child.info.status == "FINISHED"
    assert len(_client(run).search_model_versions(f"name='adkd-{KILLED}'")) == 1


def test_one_worker_runs_are_plain_tasks_without_ray_trains_actors(run: dict[str, Any]) -> None:
    # Ray Train would have started a TrainController and a SynchronizationActor per category (test_cluster_ddp
    # sees them for its data-parallel run); the event hub is the only actor a one-worker run needs.
    assert run["actors"] == {"EventHub": 1}, run["actors"]


def test_invalid_category_fails_validation_and_is_reported(run: dict[str, Any]) -> None:
    outcome = run["outcome"]
    broken = next(r for r in outcome.results if r.category == BROKEN)
    assert broken.status == "FAILED"
    assert "mask" in broken.error.lower()
    assert outcome.attempts[BROKEN] == 1  # bad data is not retried
    child = _child_runs(run)[BROKEN][0]
    assert child.info.status == "FAILED"
    assert "mask" in child.data.tags["error"].lower()
    assert not _client(run).search_model_versions(f"name='adkd-{BROKEN}'")


def test_results_table_saved_as_markdown_and_json(run: dict[str, Any]) -> None:
    outcome = run["outcome"]
    payload = json.loads(outcome.json_path.read_text())
    rows = {row["category"]: row for row in payload["categories"]}
    assert set(rows) == {*GOOD, BROKEN}
    for category in GOOD:
        assert rows[category]["registered_version"] == "1"
        assert rows[category]["metrics"]["test/image_auroc"] == pytest.approx(
            next(r for r in outcome.results if r.category == category).metrics["test/image_auroc"]
        )
    assert rows[BROKEN]["status"] == "FAILED" and rows[BROKEN]["registered_version"] is None
    markdown = outcome.markdown_path.read_text()
    header = "| category | model | status | image AUROC | pixel AUROC | AUPRO | minutes | version |"
    assert markdown.splitlines()[0] == header
    assert sum(1 for line in markdown.splitlines() if "| FINISHED |" in line) == len(GOOD)
    assert f"**{BROKEN}** failed" in markdown
