"""`adkd tune` end to end on local Ray: trials in MLflow, best params in the space, test split only for the best."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune-data") / "synth"
    run_adkd(["data", "synth", str(root), "--categories", "disc", "--train", "20", "--test", "12"], ok=True)
    return root


def test_tune_four_trials_tracked_and_only_best_sees_test(synth_root: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, ADKD_RUNS_DIR=str(tmp_path / "runs"), RAY_ADDRESS="", COLUMNS="200")
    env.pop("RAY_ADDRESS")
    # The two-term loss, so both λ and α are searched (mrkd's paper loss has no α).
    args = ["tune", "--data", str(synth_root), "--category", "disc", "--model", "mrkd",
           "--num-samples", "4", "--epochs", "1", "--max-concurrent", "2", "--set", "image_size=64",
           "--set", "model_options.loss=two_term",
           "--experiment-name", "tuned", "--run-name", "lambda-search"]  # fmt: skip
    proc = run_adkd(args, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--set model_options.alpha=" in proc.stdout and "--set model_options.mask_rate=" in proc.stdout
    # adkd's lines only: not Ray Tune's pointers into its own results folder.
    assert "View detailed results here" not in proc.stdout + proc.stderr
    assert "TensorBoard" not in proc.stdout + proc.stderr

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tuned")  # --experiment-name, not the data set's name
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags.get("command") == "tune"
    assert parents[0].data.tags["mlflow.runName"] == "lambda-search"
    assert len(trials) == 4
    best = [r for r in trials if r.data.params.get("tune_best", "").lower() == "true"]
    assert len(best) == 1
    for run in trials:
        mask_rate = float(run.data.params["tune.mask_rate"])
        alpha = float(run.data.params["tune.alpha"])
        assert 0.1 <= mask_rate <= 0.9 and 1e-2 <= alpha <= 10.0
        has_test = any(k.startswith("test/") for k in run.data.metrics)
        assert has_test == (run is best[0]), "only the best trial may be evaluated on the test split"
    # The preset's own values (mrkd: λ 0.5, α 1) ran as one of the four trials, for comparison.
    preset = [r for r in trials if r.data.params.get("tune_preset_values", "").lower() == "true"]
    assert len(preset) == 1
    assert float(preset[0].data.params["tune.mask_rate"]) == 0.5 and float(preset[0].data.params["tune.alpha"]) == 1
    history = client.get_metric_history(best[0].info.run_id, "val/pixel_auroc")
    assert len(history) >= 1

    summaries = list((tmp_path / "runs" / "tune").glob("mrkd-disc*tune.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    for key in ("test/image_auroc", "test/pixel_auroc", "test/aupro"):  # the best trial's test split, as logged
        assert best[0].data.metrics[key] == pytest.approx(summary["best_test_metrics"][key], abs=1e-12)
    objectives = [t["objective"] for t in summary["trials"]]
    assert objectives == sorted(objectives, reverse=True)
    assert summary["best"]["objective"] == max(objectives)
    assert summary["default"]["params"] == {"mask_rate": 0.5, "alpha": 1.0}
    assert "(preset)" in proc.stdout


def test_tune_with_tracking_off_writes_no_mlflow_store(synth_root: Path, tmp_path: Path) -> None:
    # ADKD_TRACKING=off was ignored by `adkd tune`: it created adkd-runs/mlflow.db and logged every trial.
    env = dict(os.environ, ADKD_TRACKING="off", ADKD_RUNS_DIR=str(tmp_path / "runs"), COLUMNS="200")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    args = ["tune", "--data", str(synth_root), "--category", "disc", "--model", "mrkd", "--num-samples", "1",
            "--epochs", "1", "--set", "image_size=64", "--set", "float_runtimes=[openvino]"]  # fmt: skip
    proc = run_adkd(args, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train it with: adkd train --category disc" in proc.stdout and "tracked in MLflow" not in proc.stdout
    # The line to paste keeps the brackets (rich took them for a tag) and quotes them (a glob for the shell).
    assert "--set 'float_runtimes=[openvino]'" in " ".join(proc.stdout.split())
    assert len(list((tmp_path / "runs" / "tune").glob("mrkd-disc*tune.json"))) == 1
    assert not (tmp_path / "runs" / "mlflow.db").exists() and not list(tmp_path.rglob("mlflow.db"))
