"""Issue 8: `adkd predict` and `adkd.load` on a promoted model; `mlflow models serve` answers a real image."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration

BOTTLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec_ad_256" / "bottle"


def _run(args: list[str], env: dict[str, str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    return run_adkd(args, env=env, cwd=cwd, timeout=900, ok=ok)


def test_predict_csv_reproduces_training_auroc(promoted: dict) -> None:
    work, env, data = promoted["work"], promoted["env"], promoted["data"]
    out = work / "pred"
    proc = _run(["predict", str(data / "disc" / "test"), "--model", "models:/adkd-disc@production",
                 "--out", str(out), "--batch-size", "5"], env, work)  # fmt: skip
    assert "images scored" in proc.stdout
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    n_test = len(list((data / "disc" / "test").rglob("*.png")))
    assert len(rows) == n_test
    labels = [0 if Path(r["image"]).parent.name == "good" else 1 for r in rows]
    scores = [float(r["score"]) for r in rows]
    auroc = roc_auc_score(labels, scores)
    assert abs(auroc - promoted["metrics"]["test/image_auroc"]) <= 1e-6
    for row in rows:
        # The verdict is the score against the threshold, which the normalised score puts at 0.5.
        side = 1 if row["verdict"] == "anomalous" else -1 if row["verdict"] == "normal" else 0
        assert side * (float(row["normalized_score"]) - 0.5) >= -1e-6, row
        overlay = Image.open(row["overlay"])
        mask = np.asarray(Image.open(row["mask"]))
        assert overlay.size == (64, 64) and overlay.mode == "RGB"
        assert set(np.unique(mask)) <= {0, 255}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == n_test and summary["n_failed"] == 0
    assert summary["model"]["version"] == "1"
    # The threshold the verdicts were made at: the run's own (ONNX Runtime fp32 here; no other variant was timed).
    fitted = json.loads((work / "runs" / "train" / "rd" / "disc" / "thresholds.json").read_text())
    assert summary["model"]["runtime"] == "onnxruntime"
    assert summary["model"]["image_threshold"] == pytest.approx(fitted["image"])


def test_evaluate_takes_a_registered_version(promoted: dict) -> None:
    work, env, data = promoted["work"], promoted["env"], promoted["data"]
    # Was refused: "checkpoint models:/adkd-disc@production does not exist; pass a .pt file".
    proc = _run(["evaluate", "-m", "models:/adkd-disc@production", "--data", str(data)], env, work)
    report = work / "runs" / "evaluate" / "adkd-disc-v1"  # not the download cache the file sits in
    assert f"report: {report}" in proc.stdout.replace("\n", "")
    measured = json.loads((report / "metrics.json").read_text())
    for key in ("test/image_auroc", "test/pixel_auroc", "test/aupro"):  # the run's own figures, re-measured
        assert measured[key] == pytest.approx(promoted["metrics"][key], abs=1e-6)
    assert (report / "scores.csv").is_file()


def test_predict_bad_inputs_are_reported_and_others_processed(promoted: dict) -> None:
    work, env, data = promoted["work"], promoted["env"], promoted["data"]
    inputs = work / "mixed"
    inputs.mkdir()
    good = sorted((data / "disc" / "test" / "good").glob("*.png"))[:2]
    for p in good:
        shutil.copy(p, inputs / p.name)
    (inputs / "notes.png").write_text("this is text, not a PNG")
    Image.new("RGBA", (100, 80), (10, 200, 30, 128)).save(inputs / "rgba.png")
    out = work / "pred-mixed"
    proc = _run(["predict", str(inputs), "--model", "models:/adkd-disc@production", "--out", str(out)], env, work,
                ok=False)  # fmt: skip
    assert proc.returncode == 2
    assert "notes.png" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 3 and summary["n_failed"] == 1
    with (out / "predictions.csv").open() as fh:  # every input, the unreadable one too
        rows = {Path(r["image"]).name: r for r in csv.DictReader(fh)}
    assert len(rows) == 4 and (rows["notes.png"]["verdict"], rows["notes.png"]["score"]) == ("failed", "")
    assert rows["notes.png"]["notes"] == summary["failures"][0]["error"] and "notes.png" in rows["notes.png"]["notes"]
    rgba = next(r for r in summary["predictions"] if r["image"].endswith("rgba.png"))
    assert "converted RGBA to RGB" in rgba["notes"] and "resized 100x80 to 64x64" in rgba["notes"]
    assert not (out / "overlays" / "notes.png").exists()
    assert Image.open(out / "masks" / "rgba.png").size == (100, 80)  # mapped back to the input's own size
    assert Image.open(out / "overlays" / "rgba.png").size == (100, 80)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("models:/adkd-nosuch@production", "does not exist"),
        ("models:/adkd-disc@staging", "holds the alias 'staging'"),
        ("missing.onnx", "does not exist"),
    ],
)
def test_predict_bad_model_reference_is_one_clear_line(promoted: dict, model: str, message: str) -> None:
    work, env, data = promoted["work"], promoted["env"], promoted["data"]
    proc = _run(["predict", str(data / "disc" / "test" / "good"), "--model", model], env, work, ok=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_python_api_load_and_predict(promoted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import adkd

    for key in ("MLFLOW_TRACKING_URI", "ADKD_CACHE_DIR"):
        monkeypatch.setenv(key, promoted["env"][key])
    detector = adkd.load("models:/adkd-disc@production")
    assert detector.image_size == 64 and detector.origin["version"] == "1"
    image = sorted((promoted["data"] / "disc" / "test").rglob("*.png"))[0]
    arr = np.asarray(Image.open(image).convert("RGB"))
    results = detector.predict([arr, Image.open(image), str(image)])
    assert len(results) == 3
    assert results[0].anomaly_map.shape == (64, 64)
    assert results[0].score == pytest.approx(results[1].score, abs=1e-6)
    assert results[0].score == pytest.approx(results[2].score, abs=1e-6)


@pytest.mark.skipif(not BOTTLE.is_dir(), reason="needs ../shared/data/mvtec_ad_256/bottle")
def test_mlflow_models_serve_answers_a_real_bottle_image(served: str) -> None:
    image = sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[0]
    buf = io.BytesIO()
    Image.open(image).save(buf, format="PNG")
    payload = {"dataframe_records": [{"image": base64.b64encode(buf.getvalue()).decode()}]}
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(served, data=json.dumps(payload).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        answer = json.loads(resp.read())
    row = answer["predictions"][0]
    assert np.isfinite(row["image_score"]) and row["normalized_score"] > 0.5
    assert row["anomalous"] is True  # a broken bottle, far from the synthetic discs the model learned
    # The model sees 64 px; the map comes back at the input image's own size.
    assert np.asarray(row["anomaly_map"]).shape[-2:] == Image.open(image).size[::-1]
