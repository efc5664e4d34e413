"""Monitoring and training get their experiment the same way: a deleted one is restored, a missing one created."""

from __future__ import annotations

from types import SimpleNamespace

from adkd.platform.tracking.client import ensure_experiment


class _Client:
    def __init__(self, stage: str | None) -> None:
        found = SimpleNamespace(experiment_id="7", lifecycle_stage=stage, tags={})
        self.experiments = {} if stage is None else {"adkd-monitoring": found}
        self.restored: list[str] = []

    def get_experiment_by_name(self, name: str):
        return self.experiments.get(name)

    def get_experiment(self, experiment_id: str):
        return next(e for e in self.experiments.values() if e.experiment_id == experiment_id)

    def restore_experiment(self, experiment_id: str) -> None:
        self.restored.append(experiment_id)

    def create_experiment(self, name: str, artifact_location=None, tags=None) -> str:
        self.experiments[name] = SimpleNamespace(experiment_id="8", lifecycle_stage="active", tags=tags or {})
        return "8"


def test_a_deleted_experiment_is_restored_and_a_missing_one_created_with_its_tags() -> None:
    deleted = _Client("deleted")
    assert ensure_experiment(deleted, "adkd-monitoring").experiment_id == "7" and deleted.restored == ["7"]
    missing = _Client(None)
    made = ensure_experiment(missing, "adkd-monitoring", tags={"kind": "x"})
    assert made.experiment_id == "8" and made.tags == {"kind": "x"} and not missing.restored
