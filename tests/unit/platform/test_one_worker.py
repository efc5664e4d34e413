"""A one-worker run's storage: checkpoints named by latest.json once whole, two kept, the final outputs fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adkd.platform.cluster.one_worker import LATEST, RunStorage, TaskSession, task_options


def _checkpoint(tmp: Path, epoch: int) -> Path:
    path = tmp / "work" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"state of epoch {epoch}".encode())
    return path


def test_a_retried_run_restores_the_last_whole_checkpoint_and_two_are_kept(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "ray"), "run-a")
    session = TaskSession(storage)
    assert session.restore(tmp_path / "restored.pt") is False  # nothing yet: a fresh start
    assert session.report_epoch(1, {"loss": 1.0}, None) is None  # no checkpoint this epoch: nothing committed
    for epoch in (1, 2, 3):
        assert session.report_epoch(epoch, {"loss": 1.0 / epoch}, _checkpoint(tmp_path, epoch)) is True
    run = tmp_path / "ray" / "run-a"
    assert json.loads((run / LATEST).read_text()) == {"epoch": 3, "dir": "epoch-00003"}
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-00002", "epoch-00003"]
    restored = tmp_path / "scratch" / "restored-last.pt"
    assert session.restore(restored) is True
    assert restored.read_bytes() == b"state of epoch 3"


def test_a_checkpoint_not_yet_named_by_latest_is_not_resumed_from(tmp_path: Path) -> None:
    # A worker killed while writing epoch 2's file: latest.json still names epoch 1, whose file is whole.
    storage = RunStorage(str(tmp_path / "ray"), "run-b")
    storage.save_checkpoint(1, _checkpoint(tmp_path, 1))
    half = tmp_path / "ray" / "run-b" / "epoch-00002"
    half.mkdir()
    (half / "last.pt").write_bytes(b"trunc")
    restored = tmp_path / "restored.pt"
    assert storage.restore(restored) and restored.read_bytes() == b"state of epoch 1"


def test_final_outputs_arrive_whole_and_replace_the_destination(tmp_path: Path) -> None:
    storage = RunStorage((tmp_path / "ray").as_uri(), "run-c")  # a file:// URI resolves as Ray Train's would
    assert storage.fetch_final(tmp_path / "out") is False
    stage = tmp_path / "stage"
    (stage / "plots").mkdir(parents=True)
    (stage / "model.onnx").write_bytes(b"onnx")
    (stage / "plots" / "roc.png").write_bytes(b"png")
    TaskSession(storage).report_final(stage, epochs=3)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("from another attempt")
    assert storage.fetch_final(dest) is True
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["model.onnx", "plots/roc.png"]


@pytest.mark.parametrize(
    ("per_worker", "expected"),
    [
        ({"CPU": 0.5}, {"num_cpus": 0.5, "num_gpus": 0.0}),
        ({"CPU": 2.0, "GPU": 0.25, "memory": 1e9}, {"num_cpus": 2.0, "num_gpus": 0.25, "memory": 1e9}),
        ({"CPU": 1.0, "accelerator_type:H100": 0.001}, {"resources": {"accelerator_type:H100": 0.001}}),
    ],
)
def test_the_task_asks_for_the_runs_resources_and_retries_as_often_as_allowed(
    per_worker: dict[str, float], expected: dict[str, object]
) -> None:
    options = task_options(per_worker, max_failures=2)
    assert options["max_retries"] == 2 and options["retry_exceptions"] is True
    assert expected.items() <= options.items()


def test_outputs_missing_from_the_run_storage_fail_the_run_naming_the_storage(tmp_path: Path) -> None:
    # A cluster whose nodes do not see the driver's disk: the task finished, its final/ is on another machine.
    from adkd.platform.cluster.driver import _fetch_outputs
    from adkd.platform.cluster.one_worker import TaskOutcome

    storage = RunStorage(str(tmp_path / "ray"), "run-d")
    finished = TaskOutcome({"status": "FINISHED", "category": "c"}, storage)
    with pytest.raises(FileNotFoundError, match=r"not in the run storage \(.*ray/run-d\); on a cluster give --storage"):
        _fetch_outputs(finished, tmp_path / "out")
    # A run that failed on bad data left no outputs by design: its own result says why.
    assert _fetch_outputs(TaskOutcome({"status": "FAILED", "error": "bad"}, storage), tmp_path / "out") is None


def test_a_run_that_sets_torchs_threads_leaves_the_next_run_in_the_worker_its_default() -> None:
    import torch

    from adkd.platform.cluster.one_worker import kept_torch_threads

    before = torch.get_num_threads()
    try:
        with kept_torch_threads():
            torch.set_num_threads(before + 1)  # what the engine does for num_threads=N
            assert torch.get_num_threads() == before + 1
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_the_storage_names_its_folder_as_the_user_gave_it(tmp_path: Path) -> None:
    from pyarrow import fs

    assert RunStorage(str(tmp_path), "r").location() == f"{tmp_path}/r"
    s3 = fs.S3FileSystem(endpoint_override="127.0.0.1:9", scheme="http", region="us-east-1")
    assert RunStorage("bucket/prefix", "r", s3).location() == "s3://bucket/prefix/r"
