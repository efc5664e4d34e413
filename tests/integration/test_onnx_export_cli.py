"""`adkd export --checkpoint`: a trained checkpoint becomes an ONNX file that scores like the training run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from adkd.pipelines.data.dataset import load_category
from adkd.pipelines.data.synth import synthesize
from adkd.pipelines.export import read_metadata
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def adkd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off"}
    return subprocess.run(
        [sys.executable, "-m", "adkd.cli.main", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_export_checkpoint_scores_like_training(tmp_path: Path) -> None:
    data = tmp_path / "exportset"
    synthesize(data, categories=["bolt"], size=64, n_train=12, n_test=8, seed=0)
    config = resolve_config(
        "stfpm", "cpu-smoke", category="bolt", data=str(data),
        overrides=["epochs=1", "num_threads=1", f"out_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    result = train_category(config)
    assert result.status == "FINISHED", result.error
    out = tmp_path / "bolt.onnx"
    proc = adkd("export", "--checkpoint", str(result.checkpoint_path), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout.replace("\n", "") and "max map diff" in proc.stdout

    meta = read_metadata(out)
    expected = ("stfpm", result.config["backbone"], "bolt", 64)
    assert (meta["model"], meta["backbone"], meta["category"], meta["image_size"]) == expected
    assert meta["metrics"]["test/image_auroc"] == pytest.approx(result.metrics["test/image_auroc"])
    assert meta["thresholds"]["image"] == pytest.approx(result.thresholds["image"])
    assert meta["parity"]["ok"] and meta["parity"]["source"].startswith("test images of")

    # The exported graph, fed the test images, gives the scores the training run wrote.
    test = load_category(data, "bolt", 64, val_fraction=config.val_fraction, seed=config.seed).test
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    _, scores, _ = session.run(None, {"image": test.permute(0, 2, 3, 1).contiguous().numpy()})
    with (result.run_dir / "scores.csv").open() as fh:
        expected = np.array([float(row["score"]) for row in csv.DictReader(fh)])
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_export_of_a_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    proc = adkd("export", "--checkpoint", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.pt does not exist" in proc.stderr and "Traceback" not in proc.stderr
