"""Listeners: what receives the events of a multi-category run (MLflow tracking, a live table, a test).

The driver of ``adkd.platform.cluster.driver.run_all_categories`` only calls listeners; it draws nothing
and writes no MLflow run itself.
"""

from __future__ import annotations

from typing import Any

from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.cluster.worker import Event


class RunListener:
    """Receives the events of many categories' trainings; every method is a no-op: override what you need.

    The driver calls them from one thread, in this order: ``start`` once with every key's config (a key
    is the category, or ``<row>--<category>`` for a benchmark); ``callback(key)`` once per key, whose
    ``TrainCallback`` gets that key's training events (each epoch once, even across restarts) and its
    result; ``event`` with every raw worker event as it arrives (``kind`` start, worker, epoch,
    checkpoint, failed, done; ``attempt`` counts restarts, repeated epochs are dropped); ``end`` once
    with every result, in the order of the configs.
    """

    def start(self, configs: dict[str, TrainConfig]) -> None:
        return None

    def callback(self, key: str) -> TrainCallback:
        return NullCallback()

    def event(self, event: Event) -> None:
        return None

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        """Close what the listener opened; return the registered model version of each category that has one."""
        return {}


class TrackingListener(RunListener):
    """MLflow through ``adkd.platform.tracking.session.TrackingSession``: a parent run, a child run per category.

    The session's per-category trackers receive the events the driver replays from the workers;
    the tracker of a finished category logs the model.onnx its worker exported and registers a version.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.summary: Any = None
        self.presets: dict[str, str] = {}

    def start(self, configs: dict[str, TrainConfig]) -> None:
        self.presets = {c: cfg.preset for c, cfg in configs.items()}
        self.session.start_parent()

    def callback(self, key: str) -> TrainCallback:
        return self.session.child(key, preset=self.presets.get(key))

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        self.summary = self.session.finish()
        return {c: str(v) for c, v in (self.summary.registered or {}).items()}
