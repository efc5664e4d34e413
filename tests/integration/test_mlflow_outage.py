"""The tracking server goes away mid-run: training goes on, writes are buffered and sent when it is back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.callbacks import NullCallback
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config
from adkd.platform.registry.publishing import RegistryPublisher
from adkd.platform.tracking.session import TrackingSession
from tests.integration.mlflow_fixtures import (  # noqa: F401
    MlflowServer,
    _module_restartable_server,
    restartable_mlflow_server,
)

pytestmark = pytest.mark.integration


class Outage(NullCallback):
    """Stops the server after epoch ``down_at`` and starts it again (in the background) after ``up_at``."""

    def __init__(self, server: MlflowServer, down_at: int, up_at: int) -> None:
        self.server, self.down_at, self.up_at = server, down_at, up_at
        self.epochs_while_down: list[int] = []
        self.restart: threading.Thread | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.down_at:
            self.server.stop()
        elif self.down_at < epoch <= self.up_at:
            self.epochs_while_down.append(epoch)
        if epoch == self.up_at:
            self.restart = threading.Thread(target=self.server.start)
            self.restart.start()


def test_server_stopped_and_restarted_mid_run(restartable_mlflow_server: MlflowServer, tmp_path: Path) -> None:  # noqa: F811
    server = restartable_mlflow_server
    data = tmp_path / "outageset"
    synthesize(data, categories=["weave"], size=64, n_train=12, n_test=8, seed=0)
    config = resolve_config(
        "rd", "cpu-smoke", category="weave", data=str(data),
        overrides=["epochs=5", "num_threads=1", f"out_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    session = TrackingSession(
        server.uri,
        "outageset",
        "train",
        publisher=RegistryPublisher(),
        local_dir=tmp_path / "adkd-runs",
        flush_timeout_s=600,
        max_backoff_s=5,
    )
    session.start_parent()
    tracker = session.child("weave", preset="cpu-smoke")
    outage = Outage(server, down_at=1, up_at=3)
    result = train_category(config, [tracker, outage])

    assert result.status == "FINISHED" and result.epochs_run == 5
    assert outage.epochs_while_down == [2, 3]  # training went on without the server
    assert session.writer is not None and session.writer.outages >= 1
    summary = session.finish()
    assert outage.restart is not None
    outage.restart.join()
    assert summary.complete and summary.unsent_report is None, summary.message
    assert summary.outages >= 1 and summary.registered == {"weave": "1"}

    client = MlflowClient(server.uri)
    run = client.get_run(summary.runs["weave"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == [1, 2, 3, 4, 5]  # the epochs logged while the server was down arrived
    assert "test/image_auroc" in run.data.metrics
    assert client.get_model_version("adkd-weave", "1").run_id == run.info.run_id


def test_server_that_never_returns_leaves_results_on_disk(
    restartable_mlflow_server: MlflowServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = restartable_mlflow_server
    session = TrackingSession(
        server.uri, "lost", "train", publisher=RegistryPublisher(), local_dir=tmp_path / "adkd-runs", flush_timeout_s=5
    )
    session.start_parent()
    tracker = session.child("weave")
    run_dir = tmp_path / "runs" / "rd" / "weave"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"test/image_auroc": 0.9}))
    tracker.on_start({"model": "rd", "category": "weave", "epochs": 3})
    tracker.on_epoch_end(1, {"train/loss": 1.0})
    assert session.writer is not None and session.writer.flush(120)
    server.stop()
    started = time.monotonic()
    tracker.on_epoch_end(2, {"train/loss": 0.5})
    tracker.on_artifact(run_dir / "metrics.json", "metrics")
    assert time.monotonic() - started < 1.0  # nothing waits for the dead server
    summary: Any = session.finish()
    assert not summary.complete
    report = json.loads(Path(summary.unsent_report).read_text())
    assert "metrics of weave epoch 2" in report["unsent"]
    assert any("metrics.json" in item for item in report["unsent"])
    assert str(run_dir) in report["local_results"]
    assert "did not come back" in summary.message and str(run_dir) in summary.message
