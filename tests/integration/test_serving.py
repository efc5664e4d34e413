"""`mlflow models serve` with a registered adkd model: bad requests get a 400 and one line, the server keeps
answering, and what it serves equals `adkd.load(...).predict` on the same images."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _test_images(promoted: dict) -> list[Path]:
    root = promoted["data"] / "disc" / "test"
    good, bad = sorted((root / "good").glob("*.png")), sorted(p for p in root.rglob("*.png") if p.parent.name != "good")
    return good[:3] + bad[:3]


def _answer_ok(url: str, image: str) -> bool:
    resp = requests.post(url, json={"dataframe_records": [{"image": image}]}, timeout=120)
    return resp.status_code == 200 and len(resp.json()["predictions"]) == 1


BAD_REQUESTS = {
    "corrupt base64": (
        lambda good: [{"image": good}, {"image": "@@ not base64 @@"}],
        "row 1: input 'image' is not base64",
    ),
    "text bytes": (
        lambda good: [{"image": good}, {"image": good}, {"image": base64.b64encode(b"plain text, no image").decode()}],
        "row 2: input 'image' cannot be decoded as an image",
    ),
    "10,000 x 10,000 image": (
        lambda good: [{"image": _png_b64(Image.new("1", (10_000, 10_000)))}],
        "row 0: input 'image' is 10000x10000 pixels",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_a_400_with_one_line_naming_the_row(served: str, promoted: dict, case: str) -> None:
    good = _png_b64(Image.open(_test_images(promoted)[0]))
    rows, expected = BAD_REQUESTS[case]
    resp = requests.post(served, json={"dataframe_records": rows(good)}, timeout=120)
    assert resp.status_code == 400, resp.text[:500]
    body = resp.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["message"].startswith(expected), body["message"][:500]
    assert "\n" not in body["message"] and len(body["message"]) < 300
    assert _answer_ok(served, good), "the server stopped answering after a bad request"


def test_missing_image_column_is_a_400_naming_the_column(served: str, promoted: dict) -> None:
    good = _png_b64(Image.open(_test_images(promoted)[0]))
    resp = requests.post(served, json={"dataframe_records": [{"picture": good}]}, timeout=120)
    assert resp.status_code == 400
    # MLflow's own schema check answers before the model runs; its reason ends the message.
    assert "Model is missing inputs ['image']" in resp.json()["message"]
    assert _answer_ok(served, good)


def test_served_output_equals_adkd_load_predict(served: str, promoted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import adkd

    for key in ("MLFLOW_TRACKING_URI", "ADKD_CACHE_DIR"):
        monkeypatch.setenv(key, promoted["env"][key])
    files = _test_images(promoted)
    payload = {"dataframe_records": [{"image": _png_b64(Image.open(p))} for p in files]}
    resp = requests.post(served, json=payload, timeout=300)
    assert resp.status_code == 200, resp.text[:500]
    served_rows = resp.json()["predictions"]
    local = adkd.load("models:/adkd-disc@production").predict([str(p) for p in files])
    assert len(served_rows) == len(local) == len(files)
    scores = np.array([r["image_score"] for r in served_rows])
    assert np.ptp(scores) > 0  # different images, different scores: the comparison below is not vacuous
    for row, pred in zip(served_rows, local, strict=True):
        served_map = np.asarray(row["anomaly_map"], dtype=np.float32)
        assert served_map.shape == pred.anomaly_map.shape
        np.testing.assert_allclose(row["image_score"], pred.score, rtol=0, atol=1e-5)
        np.testing.assert_allclose(row["normalized_score"], pred.normalized_score, rtol=0, atol=1e-5)
        np.testing.assert_allclose(served_map, pred.anomaly_map, rtol=0, atol=1e-5)
        assert row["anomalous"] == pred.anomalous


def test_load_benchmark_runs_against_the_registered_model(promoted: dict, tmp_path: Path) -> None:
    """benchmarks/serve_load.py end to end at a tiny setting: its own server, load, bad requests, report."""
    env = dict(promoted["env"], PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    images = promoted["data"] / "disc" / "test" / "good"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"),
           "--clients", "2", "--requests", "5", "--warmup", "1", "--model-uri", "models:/adkd-disc@production",
           "--images", str(images), "--tag", "test", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "serve_load-test.json").read_text())
    assert report["load"]["requests"] == 10 and report["load"]["errors"] == 0
    assert report["load"]["latency_ms"]["p99"] >= report["load"]["latency_ms"]["p50"] > 0
    assert [c["status"] for c in report["bad_requests"]] == [400, 400, 400, 400]
    assert all(c["next_good_request"] == 200 for c in report["bad_requests"])
    assert "| requests | errors | p50 ms |" in proc.stdout
