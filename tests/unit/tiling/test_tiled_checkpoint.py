"""A tiled checkpoint exported and quantized from the command line's functions: whole images at their own size.

``adkd export`` (``export_checkpoint``) loads the run's data at the tiling's resolution, exports the tile graph,
checks it against PyTorch on whole test images and fits the thresholds on the file's stitched scores; the int8
model is calibrated on tiles and gated on whole images, and its predictor stitches like the fp32 one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.export.onnx_export import read_metadata
from adkd.pipelines.predict.runtimes import open_predictor
from adkd.pipelines.train import checkpoint as ckpt
from adkd.pipelines.train.presets import resolve_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adkd.models.zoo import build_model

    tmp = tmp_path_factory.mktemp("tiled-ckpt")
    synthesize(tmp / "data", ["weave"], size=96, n_train=16, n_test=4, seed=1)
    config = resolve_config(
        "stfpm", "cpu-smoke", category="weave", data=str(tmp / "data"),
        overrides=["tiling.tile_size=64", "tiling.stride=32", "val_fraction=0.5"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model("stfpm", backbone="mobilenet_v2", weights="none").eval()
    meta = {"thresholds": {"image": 1.0, "pixel": 0.5, "score_min": 0.0, "score_max": 2.0},
            "tiling": {"tile": 64, "stride": 32, "blend": "linear", "mode": "shared"}}  # fmt: skip
    return ckpt.save_checkpoint(tmp / "run" / "model.pt", ckpt.checkpoint_dict(model, config, meta))


def test_export_checkpoint_uses_the_images_own_resolution(checkpoint: Path) -> None:
    from adkd.pipelines.train.artifacts import export_checkpoint

    path = export_checkpoint(checkpoint)
    meta = read_metadata(path)
    assert meta["image_size"] == 64 and meta["tiling"]["tile"] == 64
    assert meta["stitched_parity"]["size"] == "96x96"  # whole test images at their own size
    assert meta["thresholds_fitted_on"]["source"] == "validation" and meta["thresholds"]["image"] != 1.0


def test_int8_of_a_tiled_model_is_gated_on_whole_images(checkpoint: Path) -> None:
    from adkd.pipelines.train.artifacts import export_checkpoint, export_int8_checkpoint

    fp32 = checkpoint.with_suffix(".onnx")
    if not fp32.is_file():
        export_checkpoint(checkpoint)
    result = export_int8_checkpoint(checkpoint, fp32, enforce_gate=False)
    assert result.gate.n_normals >= 1 and set(result.test_metrics) == {"fp32", "int8"}
    int8 = open_predictor(result.path, "auto")
    assert int8.runtime == "onnxruntime-int8" and read_metadata(result.path)["tiling"]["tile"] == 64
    fp = open_predictor(fp32, "onnxruntime").predict([np.full((80, 120, 3), 90, np.uint8)])[0]
    q = int8.predict([np.full((80, 120, 3), 90, np.uint8)])[0]
    assert fp.anomaly_map.shape == q.anomaly_map.shape == (80, 120)
    assert np.corrcoef(fp.anomaly_map.ravel(), q.anomaly_map.ravel())[0, 1] > 0.9
