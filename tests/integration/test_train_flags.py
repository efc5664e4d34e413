"""`adkd train -c X` honours --no-tracking and a TOML --config the way the Ray path does.

Each test runs the real command in an empty folder (no ADKD_/MLFLOW_ variables), 64 px, one epoch.
The Ray path's --out and --no-tracking are checked on the two-node cluster of test_multinode.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from adkd.pipelines.export.onnx_export import read_metadata
from tests.cli_process import run_adkd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TINY = ["--model", "stfpm", "--preset", "cpu-smoke", "--set", "epochs=1", "--set", "image_size=64",
        "--set", "weights=none"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    root = tmp_path_factory.mktemp("flags") / "data"
    synthesize(root, categories=["weave", "disc"], size=64, n_train=12, n_test=8, seed=3)
    return root


KEPT = ("ADKD_CACHE_DIR", "ADKD_GATE_MEMO")


def _adkd(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADKD_", "MLFLOW_", "RAY_ADDRESS"))}
    # The flags under test come from the command line alone; the caches stay the suite's (not the user's home).
    env.update({k: os.environ[k] for k in KEPT if k in os.environ})
    env["COLUMNS"] = "200"
    return run_adkd(args, cwd=cwd, env=env, timeout=800)


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_single_category_without_tracking_writes_onnx_and_no_mlflow_run(data: Path, tmp_path: Path) -> None:
    done = _adkd(tmp_path, "train", "-c", "weave", "-d", str(data), *TINY, "--no-tracking")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "adkd-runs" / "train" / "stfpm" / "weave"
    meta = read_metadata(run_dir / "model.onnx")  # the run's own export step, checked against PyTorch
    assert (meta["model"], meta["category"], meta["checkpoint"]) == ("stfpm", "weave", "model.pt")
    assert meta["parity"]["ok"]
    assert not (tmp_path / "adkd-runs" / "mlflow.db").exists()  # no store was even created
    assert "registered" not in done.stdout + done.stderr


def test_a_toml_config_supplies_the_tracking_uri(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere.db"
    settings = tmp_path / "f.toml"
    settings.write_text(f'tracking_uri = "sqlite:///{store}"\nexperiment = "from-file"\n\n[train]\nbatch_size = 4\n')
    done = _adkd(tmp_path, "train", "-c", "weave", "-d", str(data), *TINY, "--config", str(settings))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / "adkd-runs" / "mlflow.db").exists()
    runs = [r for r in _runs(f"sqlite:///{store}") if r.data.tags.get("category") == "weave"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["batch_size"] == "4"  # the file's [train] table applied too
    assert "registered adkd-weave version 1" in done.stdout + done.stderr


def test_python_api_trains_through_the_same_path(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adkd

    monkeypatch.chdir(tmp_path)
    overrides = ["epochs=1", "image_size=64", "weights=none"]
    result = adkd.train("disc", data, "stfpm", "cpu-smoke", overrides, out=tmp_path / "api", tracking=False)
    assert result.status == "FINISHED", result.error
    assert result.onnx_path is not None and result.onnx_path.is_file()
    assert result.run_dir == tmp_path / "api" / "stfpm" / "disc"
    assert len(result.data_fingerprint) == 64
    assert not (tmp_path / "adkd-runs").exists()
    images = sorted((data / "disc" / "test").rglob("*.png"))[:2]
    predictions = adkd.load(result.onnx_path).predict([str(p) for p in images])
    assert len(predictions) == 2 and all(p.score == p.score for p in predictions)
