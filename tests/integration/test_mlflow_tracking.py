# ruff: noqa: F811  (pytest fixtures imported by name and used as arguments)
"""`adkd train` against a real `mlflow server`: runs, params, metrics, artifacts, ONNX model, registry v1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.platform.registry.pyfunc import encode_png
from tests.cli_process import run_adkd
from tests.integration.mlflow_fixtures import mlflow_server  # noqa: F401

pytestmark = pytest.mark.integration

CATEGORY = "disc"
SECRET = "AKIAIOSFODNN7EXAMPLE"
BOTTLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec_ad_256" / "bottle"


def adkd(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_adkd(args, env=env, cwd=cwd, timeout=timeout)


def _env(tmp: Path, tracking_uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "ADKD_RUNS_DIR": str(tmp / "adkd-runs"),
        "AWS_SECRET_ACCESS_KEY": SECRET,  # must never reach MLflow
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.fixture(scope="module")
def trained(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("tracked")
    data = tmp / "synthset"
    synthesize(data, categories=[CATEGORY], size=64, n_train=12, n_test=8, seed=0)
    args = ["train", "-c", CATEGORY, "-d", str(data), "-m", "rd", "-p", "cpu-smoke", "--set", "epochs=2"]
    args += ["--set", "num_threads=1", "--out", str(tmp / "runs")]
    proc = adkd(args, _env(tmp, mlflow_server), tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("synthset")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId"))
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    return {"client": client, "parent": parent, "child": child, "proc": proc, "tmp": tmp, "data": data}


def test_parent_and_child_runs_with_tags_and_params(trained: dict[str, Any]) -> None:
    parent, child = trained["parent"], trained["child"]
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert parent.data.tags["command"] == "train"
    tags = child.data.tags
    assert tags["category"] == CATEGORY and tags["model"] == "rd" and tags["preset"] == "cpu-smoke"
    # device=auto: the tag names the GPU where CUDA is (the suite also runs on GPU machines).
    expected_device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    assert len(tags["data_fingerprint"]) == 64 and tags["device"] == expected_device
    assert tags["adkd_version"] and tags["torch_version"] and tags["git_commit"]
    params = child.data.params
    config = json.loads((trained["tmp"] / "runs" / "rd" / CATEGORY / "config.json").read_text())
    assert params["epochs"] == "2" and params["backbone"] == config["backbone"] == tags["backbone"]
    assert float(params["optimizer.lr"]) == config["optimizer"]["lr"]
    everything = json.dumps([parent.data.params, parent.data.tags, params, tags])
    assert SECRET not in everything


def test_per_epoch_and_final_metrics(trained: dict[str, Any]) -> None:
    client, child = trained["client"], trained["child"]
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert all(np.isfinite(m.value) for m in history)
    metrics = child.data.metrics
    run_metrics = json.loads((trained["tmp"] / "runs" / "rd" / CATEGORY / "metrics.json").read_text())
    for key in ("test/image_auroc", "test/pixel_auroc", "test/aupro", "test/f1_max"):  # the run's own numbers
        assert metrics[key] == pytest.approx(run_metrics[key], abs=1e-12)


def test_artifacts_config_scores_images_checkpoint(
    trained: dict[str, Any],
    mlflow_server: str,
    tmp_path: Path,
) -> None:
    run_id = trained["child"].info.run_id
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path), tracking_uri=mlflow_server))
    names = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "metrics.json" in names and "scores.csv" in names and "checkpoint/model.pt" in names
    assert any(n.startswith("config/") for n in names)
    assert any(n.endswith(".png") for n in names), names  # overlays / curves
    config = json.loads(next(local.glob("config/*.json")).read_text())
    assert config["model"] == "rd" and SECRET not in json.dumps(config)


def test_registered_version_1_predicts_on_a_real_image(trained: dict[str, Any], mlflow_server: str) -> None:
    client = trained["client"]
    mv = client.get_model_version(f"adkd-{CATEGORY}", "1")
    assert mv.run_id == trained["child"].info.run_id
    assert float(mv.tags["metric.image_auroc"]) == pytest.approx(trained["child"].data.metrics["test/image_auroc"])
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/adkd-{CATEGORY}/1")
    if BOTTLE.is_dir():
        image = np.asarray(Image.open(sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[0]).convert("RGB"))
    else:  # the synthetic set's own test image
        image = np.asarray(Image.open(sorted((trained["data"] / CATEGORY / "test").rglob("*.png"))[0]).convert("RGB"))
    out = model.predict(pd.DataFrame({"image": [encode_png(image)]}))
    assert list(out.columns[:3]) == ["image_score", "normalized_score", "anomalous"]
    # Same numbers as running the exported file on the same resized image.
    onnx_path = trained["tmp"] / "runs" / "rd" / CATEGORY / "model.onnx"
    small = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR))[None]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    _, score, norm = session.run(None, {"image": small})
    assert out["image_score"][0] == pytest.approx(float(score[0]), rel=1e-6)
    assert out["normalized_score"][0] == pytest.approx(float(norm[0]), abs=1e-6)
    assert np.asarray(out["anomaly_map"][0]).shape == image.shape[:2]  # back at the input's own size
    assert bool(out["resized"][0]) is (image.shape[:2] != (64, 64))


def test_onnx_flavor_model_is_logged_with_signature(trained: dict[str, Any], mlflow_server: str) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    uri = trained["client"].get_run(trained["child"].info.run_id).data.tags["onnx_model_uri"]
    assert mlflow.models.get_model_info(uri).flavors.keys() >= {"onnx", "python_function"}
    # Both logged models live in the run's experiment, linked to the child run.
    child = trained["child"]
    logged = mlflow.search_logged_models(experiment_ids=[child.info.experiment_id], output_format="list")
    assert sorted(m.name for m in logged if m.source_run_id == child.info.run_id) == ["model", "onnx"]
    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.metadata.get_input_schema().inputs[0].name == "image"
    images = np.full((2, 64, 64, 3), 100, dtype=np.uint8)
    out = loaded.predict({"image": images})
    assert out["anomaly_map"].shape == (2, 1, 64, 64) and out["image_score"].shape == (2,)


def test_registry_list_cli_shows_the_version(trained: dict[str, Any], mlflow_server: str) -> None:
    proc = adkd(
        ["registry", "list", "--json", "--category", CATEGORY], _env(trained["tmp"], mlflow_server), trained["tmp"]
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["version"] for r in rows] == ["1"]
    assert rows[0]["family"] == "rd" and rows[0]["run_id"] == trained["child"].info.run_id
    assert rows[0]["metrics"]["image_auroc"] == pytest.approx(trained["child"].data.metrics["test/image_auroc"])


def test_failed_run_is_failed_with_error_and_not_registered(
    trained: dict[str, Any],
    mlflow_server: str,
) -> None:
    data = trained["data"]
    broken = data / "broken"
    synthesize(data, categories=["chip"], size=64, n_train=12, n_test=8, seed=1)
    (data / "chip").rename(broken)
    next((broken / "test").rglob("*.png")).write_bytes(b"not a png")
    args = ["train", "-c", "broken", "-d", str(data), "-m", "rd", "-p", "cpu-smoke", "--set", "epochs=1"]
    proc = adkd([*args, "--out", str(trained["tmp"] / "runs")], _env(trained["tmp"], mlflow_server), trained["tmp"])
    assert proc.returncode == 2, proc.stderr
    client = trained["client"]
    runs = client.search_runs([trained["child"].info.experiment_id], filter_string="tags.category = 'broken'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["error"]
    assert client.search_model_versions("name = 'adkd-broken'") == []


def test_unreachable_server_fails_before_training(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tmp_path / "d"
    synthesize(data, categories=[CATEGORY], size=64, n_train=4, n_test=4, seed=0)
    out = tmp_path / "runs"
    args = ["train", "-c", CATEGORY, "-d", str(data), "-m", "rd", "-p", "cpu-smoke", "--out", str(out)]
    proc = adkd(args, _env(tmp_path, f"http://127.0.0.1:{port}"), tmp_path)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port} is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_embedded_store_by_default_and_registration_can_be_skipped(trained: dict[str, Any], tmp_path: Path) -> None:
    # Registration itself is covered by `trained` (a server store); here: no URI -> the embedded store, and
    # ADKD_REGISTER=off -> a finished, fully logged run with no version.
    env = {**_env(tmp_path, ""), "ADKD_REGISTER": "off"}
    del env["MLFLOW_TRACKING_URI"]
    args = ["train", "-c", CATEGORY, "-d", str(trained["data"]), "-m", "stfpm", "-p", "cpu-smoke"]
    args += ["--set", "epochs=1", "--set", "num_threads=1", "--out", str(tmp_path / "runs")]
    proc = adkd(args, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    store = tmp_path / "adkd-runs"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthset")
    assert experiment.artifact_location == (store / "artifacts").resolve().as_uri()
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.category = '{CATEGORY}'")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert "test/image_auroc" in children[0].data.metrics
    assert "registered_model" not in children[0].data.tags
    assert client.search_registered_models() == []
    assert any((store / "artifacts").rglob("model.onnx"))
