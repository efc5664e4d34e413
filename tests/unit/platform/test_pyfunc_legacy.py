"""Registered models of an earlier release keep loading: their pickle names the pyfunc class at its old path."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch

from adkd.models.zoo import build_model
from adkd.pipelines.export import export_onnx
from adkd.pipelines.predict import open_predictor
from adkd.platform.registry.pyfunc import OnnxAnomalyModel, encode_png

OLD_MODEL = Path(__file__).resolve().parents[2] / "data" / "registry_v1" / "model"
SIZE = 32
THRESHOLDS = {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6}


def test_a_model_registered_by_the_release_before_the_move_loads_and_predicts(tmp_path: Path) -> None:
    assert b"adkd.platform.pyfunc" in (OLD_MODEL / "python_model.pkl").read_bytes()  # the old path, as stored
    folder = shutil.copytree(OLD_MODEL, tmp_path / "model")
    torch.manual_seed(0)
    model = build_model("stfpm", backbone="mobilenet_v2", weights="none").eval()
    onnx = export_onnx(model, folder / "artifacts" / "model.onnx", SIZE, THRESHOLDS, {"model": "stfpm"})

    loaded = mlflow.pyfunc.load_model(str(folder))
    assert isinstance(loaded.unwrap_python_model(), OnnxAnomalyModel)
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = loaded.predict(pd.DataFrame({"image": [encode_png(image)]}), params={"return_maps": False})
    expected = open_predictor(onnx).predict([image])[0].score
    assert abs(out["image_score"][0] - expected) <= 1e-6 * max(1.0, abs(expected))
    assert out["threshold"][0] == pytest.approx(THRESHOLDS["image"])
