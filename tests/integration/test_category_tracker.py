"""CategoryTracker on a real local MLflow store: it logs the model.onnx the run exported, never exports itself.

One short real training (1 epoch, 64 px, random teacher) gives the events, the checkpoint and the ONNX file
the engine exported; each test replays those events into a tracker the way a Ray driver does.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config
from adkd.platform.registry.publishing import RegistryPublisher
from adkd.platform.registry.pyfunc import INT8_ARTIFACT, ONNX_ARTIFACT
from adkd.platform.tracking.category_run import CategoryTracker
from adkd.platform.tracking.session import StandaloneTracker, TrackingSession
from adkd.platform.tracking.values import MAX_TAG_VALUE
from adkd.settings import Settings

pytestmark = pytest.mark.integration

CATEGORY = "disc"
# The root the user gave (with credentials that must not reach MLflow); the run itself read a local copy.
USER_ROOT = "https://reader:hunter2@data.example.com/sets/synthset"
USER_ROOT_TAG = "https://data.example.com/sets/synthset"


class Recorder(NullCallback):
    """Keeps every event of a run, to replay into trackers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def on_start(self, config: dict[str, Any]) -> None:
        self.events.append(("on_start", (config,)))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append(("on_epoch_end", (epoch, metrics)))

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.events.append(("on_checkpoint", (path, epoch)))

    def on_artifact(self, path: Path, kind: str) -> None:
        self.events.append(("on_artifact", (path, kind)))

    def on_end(self, result: TrainResult) -> None:
        self.events.append(("on_end", (result,)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("tracker")
    data = tmp / "cache" / "synthset"  # where a worker read the data, not what the user typed
    synthesize(data, categories=[CATEGORY], size=64, n_train=8, n_test=6, seed=0)
    overrides = ["epochs=1", "num_threads=1", "weights=none", f"out_dir={tmp / 'runs'}"]
    config = resolve_config("rd", "cpu-smoke", category=CATEGORY, data=str(data), overrides=overrides)
    recorder = Recorder()
    result = train_category(config, [recorder])
    assert result.status == "FINISHED", result.error
    onnx = result.onnx_path
    assert onnx is not None and onnx.is_file() and ("on_artifact", (onnx, "onnx")) in recorder.events
    assert result.data_fingerprint == data_fingerprint(data, CATEGORY) and len(result.data_fingerprint) == 64
    return {"tmp": tmp, "data": data, "result": result, "events": recorder.events[:-1], "onnx": onnx}


def _session(tmp: Path, **kwargs: Any) -> TrackingSession:
    store = tmp / "store"
    store.mkdir(parents=True, exist_ok=True)
    return TrackingSession(
        f"sqlite:///{store / 'mlflow.db'}",
        "synthset",
        "train",
        publisher=RegistryPublisher(),
        artifact_location=(store / "artifacts").resolve().as_uri(),
        local_dir=tmp,
        **kwargs,
    )


def _replay(tracker: Any, events: list[tuple[str, tuple[Any, ...]]], result: TrainResult) -> None:
    for name, args in events:
        getattr(tracker, name)(*args)
    tracker.on_end(result)


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path or None):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_finished_run_logs_the_given_onnx_with_user_root_and_fingerprint(trained: dict[str, Any]) -> None:
    tmp = trained["tmp"] / "finished"
    int8 = shutil.copy(trained["onnx"], trained["tmp"] / "model_int8.onnx")  # stands in for the gated int8 file
    fingerprint = data_fingerprint(trained["data"], CATEGORY)
    verdict = "x" * (MAX_TAG_VALUE + 100)
    result = dataclasses.replace(
        trained["result"],
        onnx_path=trained["onnx"],
        int8_path=Path(int8),
        tags={"int8": "refused", "int8_refused": verdict},
        data_fingerprint=fingerprint,
    )
    events = [*trained["events"], ("on_artifact", (Path(int8), "onnx_int8"))]
    session = _session(tmp, data_root=USER_ROOT)
    session.start_parent()
    tracker = session.child(CATEGORY, preset="cpu-smoke")
    _replay(tracker, events, result)
    summary = session.finish()
    assert summary.complete, summary.message
    assert summary.registered == {CATEGORY: "1"}

    client = MlflowClient(session.tracking_uri)
    run = client.get_run(summary.runs[CATEGORY])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["data"] == USER_ROOT_TAG  # the root given to the session, without credentials, not the cache path
    assert tags["data_fingerprint"] == fingerprint and len(fingerprint) == 64
    assert tags["int8"] == "refused" and tags["int8_refused"] == "x" * MAX_TAG_VALUE
    assert tags["registered_model"] == f"adkd-{CATEGORY}/1"
    version = client.get_model_version(f"adkd-{CATEGORY}", "1")  # the data it was evaluated on: the run's tags
    assert (version.tags["data"], version.tags["data_fingerprint"], version.tags["dataset"]) == (
        USER_ROOT_TAG,
        fingerprint,
        "synthset",
    )
    names = _artifacts(client, run.info.run_id)
    assert "checkpoint/model.pt" in names and "metrics.json" in names
    assert not any("int8" in n or n.endswith(".onnx") for n in names), names  # ONNX files only inside models

    mlflow.set_tracking_uri(session.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/adkd-{CATEGORY}/1")
    pyfunc_files = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp / "dl")))
    artifacts = {p.name for p in pyfunc_files.rglob("*.onnx")}
    assert {trained["onnx"].name, Path(int8).name} <= artifacts, artifacts
    assert set(info.flavors["python_function"]["artifacts"]) == {ONNX_ARTIFACT, INT8_ARTIFACT}
    assert tags["onnx_model_uri"].startswith("models:/")


def test_finished_run_without_onnx_fails_and_registers_nothing(trained: dict[str, Any]) -> None:
    tmp = trained["tmp"] / "no-onnx"
    result = dataclasses.replace(trained["result"], onnx_path=None, data_fingerprint="")
    events = [e for e in trained["events"] if e[0] != "on_artifact" or e[1][1] != "onnx"]  # a run that exported none
    session = _session(tmp, data_root=str(trained["data"]))
    session.start_parent()
    tracker: CategoryTracker = session.child(CATEGORY)
    _replay(tracker, events, result)
    summary = session.finish()
    message = f"{CATEGORY}: the run wrote no model.onnx; nothing to log or register"
    assert tracker.status == "FAILED" and tracker.error == message
    assert summary.failed == {CATEGORY: message} and summary.registered == {}
    client = MlflowClient(session.tracking_uri)
    run = client.get_run(summary.runs[CATEGORY])
    assert run.info.status == "FAILED" and run.data.tags["error"] == message
    assert "data_fingerprint" not in run.data.tags  # the run computed none; the tracker never invents one
    assert client.search_model_versions(f"name = 'adkd-{CATEGORY}'") == []


def test_standalone_tracker_opens_over_given_settings_and_can_skip_registration(trained: dict[str, Any]) -> None:
    tmp = trained["tmp"] / "standalone"
    settings = Settings(runs_dir=tmp / "adkd-runs", register_models=True)
    config = trained["result"].config
    train_config = resolve_config("rd", "cpu-smoke", category=CATEGORY, data=USER_ROOT, overrides=[])
    tracker = StandaloneTracker.open(settings, train_config, publisher=RegistryPublisher(), register=False)
    result = dataclasses.replace(trained["result"], onnx_path=trained["onnx"], data_fingerprint="f" * 64)
    for name, args in trained["events"]:
        getattr(tracker, name)(*args)
    tracker.on_end(result)
    assert tracker.summary is not None and tracker.summary.complete
    assert tracker.summary.registered == {}
    client = MlflowClient(settings.resolved_tracking_uri)
    experiment = client.get_experiment_by_name("synthset")  # named after the root the user gave
    assert experiment is not None
    [child] = client.search_runs([experiment.experiment_id], filter_string=f"tags.category = '{CATEGORY}'")
    assert child.info.status == "FINISHED" and child.data.tags["data"] == USER_ROOT_TAG
    assert child.data.tags["data_fingerprint"] == "f" * 64 and config["data"] == str(trained["data"])
    assert client.search_registered_models() == []
