"""The teacher's weights are checked before the data gate and any tracking run: a wrong path or an offline machine
is one line, exit 2, with nothing written (no MLflow store, no run folder, no Ray started)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from adkd.errors import WeightsError
from adkd.pipelines.train.config import TrainConfig, check_teacher_weights
from adkd.pipelines.train.presets import resolve_config
from tests.cli_process import run_adkd

REPO = Path(__file__).resolve().parents[3]
CACHED = "hub/checkpoints/wide_resnet50_2-95faca4d.pth"


def config(weights: str, preset: str = "cpu-smoke") -> TrainConfig:
    """rd's settings with ``weights`` (the paper preset's teacher is WideResNet50-2)."""
    return resolve_config("rd", preset, "bottle", "/data", overrides=[f"weights={weights}"])


def test_a_state_dict_path_must_be_a_file(tmp_path: Path) -> None:
    check_teacher_weights(config("none"))
    missing = f"teacher weights file {tmp_path}/w.pth does not exist: pass an existing state-dict file"
    with pytest.raises(WeightsError, match=f"^{re.escape(missing)}"):
        check_teacher_weights(config(str(tmp_path / "w.pth")))
    (tmp_path / "w.pth").mkdir()
    with pytest.raises(WeightsError, match=r"w\.pth is a folder"):
        check_teacher_weights(config(str(tmp_path / "w.pth")))
    (tmp_path / "f.pth").write_bytes(b"read when the model is built, not here")
    check_teacher_weights(config(str(tmp_path / "f.pth")))


def test_imagenet_weights_come_from_the_cache_or_are_refused_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ADKD_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        check_teacher_weights(config("imagenet", "paper"))
    assert str(err.value).startswith("ImageNet weights for wide_resnet50_2 are not cached: copy ")
    assert f"into {tmp_path}/hub/checkpoints" in str(err.value) and "ADKD_OFFLINE is set" in str(err.value)
    (tmp_path / CACHED).parent.mkdir(parents=True)
    (tmp_path / CACHED).write_bytes(b"")  # a cached file is read when the teacher is built, not by the check
    check_teacher_weights(config("imagenet", "paper"))


@pytest.mark.parametrize(
    "command",
    [["train", "-c", "bottle"], ["train", "--all-categories"], ["tune", "-c", "bottle"]],
    ids=["train one category", "train all categories on the embedded Ray", "tune on the embedded Ray"],
)
def test_missing_weights_are_refused_before_the_gate_ray_and_tracking(tmp_path: Path, command: list[str]) -> None:
    for category in ("bottle", "cable"):
        (tmp_path / "data" / category / "train" / "good").mkdir(parents=True)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(runs)}
    for tracking_off in ("ADKD_TRACKING", "MLFLOW_TRACKING_URI"):  # tracked as by default: into ADKD_RUNS_DIR
        env.pop(tracking_off, None)
    args = [*command, "--data", "data", "-m", "mrkd", "--preset", "cpu-smoke", "--set", "weights=w.pth"]
    proc = run_adkd(args, env=env, cwd=tmp_path, timeout=120, start_warm=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == [
        "error: teacher weights file w.pth does not exist: pass an existing state-dict file, 'imagenet' or 'none'"
    ]
    assert not runs.exists()  # no MLflow store, no run folder, no data gate report
