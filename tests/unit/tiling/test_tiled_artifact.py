"""A tiled model's exported artifact takes whole images of any size and returns each one's full map, equal to
PyTorch's stitched map within the export tolerance: adkd.load, `adkd predict`, the served pyfunc, per position."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from adkd.models.preprocess import normalize
from adkd.models.zoo import build_model
from adkd.pipelines.export.onnx_export import MAP_TOLERANCE, read_metadata
from adkd.pipelines.export.tiled import export_tiled
from adkd.pipelines.predict.runtimes import open_predictor
from adkd.pipelines.predict.tiled import TiledPredictor
from adkd.pipelines.tiling.model import PerPositionModel, TiledModel
from adkd.pipelines.tiling.spec import TilingSpec

THRESHOLDS = {"image": 1.0, "pixel": 0.8, "score_min": 0.0, "score_max": 2.0}


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("stfpm", backbone="mobilenet_v2", weights="none").eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.clip(smooth + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _torch_map(model: torch.nn.Module, spec: TilingSpec, image: np.ndarray) -> np.ndarray:
    tiled = TiledModel(model, spec.tile, spec.stride, spec.blend).eval()
    with torch.inference_mode():
        amap, _ = tiled(normalize(torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2)))
    return amap[0, 0].numpy()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, TilingSpec, Path]:
    model, spec = _model(0), TilingSpec(tile=64, stride=48)
    path = export_tiled(model, tmp_path_factory.mktemp("tiled") / "model.onnx", spec, THRESHOLDS, {"resize": "stretch"})
    return model, spec, path


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= MAP_TOLERANCE * (want.max() - want.min())


def test_export_records_tiling_and_both_parity_checks(shared) -> None:
    _, spec, path = shared
    meta = read_metadata(path)
    assert meta["image_size"] == 64 and TilingSpec.from_meta(meta) == spec
    assert meta["parity"]["ok"] and meta["stitched_parity"]["max_map_diff"] <= meta["stitched_parity"]["map_tolerance"]


@pytest.mark.parametrize(("h", "w"), [(150, 170), (64, 64), (40, 90)])
def test_adkd_load_returns_each_inputs_own_size_equal_to_pytorch(shared, h: int, w: int) -> None:
    import adkd

    model, spec, path = shared
    detector = adkd.load(path)
    assert isinstance(detector.predictor, TiledPredictor)
    image = _image(h, w)
    pred = detector.predict(image)[0]
    want = _torch_map(model, spec, image)
    _close(pred.anomaly_map, want)
    assert pred.score == pytest.approx(float(want.max()), abs=1e-4 * max(1.0, float(want.max())))
    assert pred.anomalous == (pred.score > THRESHOLDS["image"])


def test_adkd_predict_writes_overlay_and_mask_at_each_inputs_size(shared, tmp_path, monkeypatch) -> None:
    from adkd.cli.main import run

    model, spec, path = shared
    files = []
    for i, (h, w) in enumerate([(150, 170), (90, 200)]):
        files.append(tmp_path / f"in{i}.png")
        Image.fromarray(_image(h, w, seed=i)).save(files[-1])
    out = tmp_path / "pred"
    monkeypatch.setattr(sys, "argv", ["adkd", "predict", *map(str, files), "-m", str(path), "-o", str(out)])
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code in (0, None)
    for i, file in enumerate(files):
        image = np.asarray(Image.open(file))
        want = _torch_map(model, spec, image)
        mask = np.asarray(Image.open(out / "masks" / f"in{i}.png")) > 0
        overlay = Image.open(out / "overlays" / f"in{i}.png")
        assert overlay.size == (image.shape[1], image.shape[0]) and mask.shape == image.shape[:2]
        # Equal up to pixels whose map value is within the export tolerance of the pixel threshold.
        near = np.abs(want - THRESHOLDS["pixel"]) <= MAP_TOLERANCE * (want.max() - want.min())
        assert np.array_equal(mask[~near], (want >= THRESHOLDS["pixel"])[~near])


def test_served_pyfunc_returns_the_stitched_map_at_the_inputs_size(shared) -> None:
    from adkd.platform.registry.pyfunc import OnnxAnomalyModel, encode_png

    model, spec, path = shared
    served = OnnxAnomalyModel().load(path, runtime="onnxruntime")
    images = [_image(150, 170, seed=3), _image(70, 64, seed=4)]
    rows = served.predict(None, pd.DataFrame({"image": [encode_png(im) for im in images]}))
    for image, (_, row) in zip(images, rows.iterrows(), strict=True):
        want = _torch_map(model, spec, image)
        _close(np.asarray(row["anomaly_map"], dtype=np.float32), want)
        assert row["image_score"] == pytest.approx(float(want.max()), abs=1e-4 * max(1.0, float(want.max())))
        assert not row["resized"]


def test_per_position_artifact_brings_inputs_to_the_trained_size(tmp_path: Path) -> None:
    models = PerPositionModel([_model(seed) for seed in range(2)]).eval()
    spec = TilingSpec(tile=64, stride=48, mode="per_position", positions=2, height=64, width=110)
    path = export_tiled(models, tmp_path / "pp.onnx", spec, THRESHOLDS)
    predictor = open_predictor(path)
    image = _image(64, 110, seed=5)
    _close(predictor.predict([image])[0].anomaly_map, _torch_map(models, spec, image))
    other = predictor.predict([_image(150, 170, seed=6)])[0]
    assert other.anomaly_map.shape == (150, 170) and "per-position model's size" in other.notes[0]


def test_letterboxed_tiled_model_scores_the_image_area_as_training_does(tmp_path: Path) -> None:
    """At ``tiling.image_size`` with letterbox, training scores the max over the image area (``mask_geometry``):
    ``adkd predict``, ``adkd.load`` and the served pyfunc read the same score, never the padding's."""
    from adkd.pipelines.evaluate.thresholds import normalize_scores
    from adkd.pipelines.inference.artifact import score_artifact
    from adkd.pipelines.inference.validity import valid_masks
    from adkd.platform.registry.pyfunc import OnnxAnomalyModel, encode_png

    spec = TilingSpec(tile=64, stride=48, image_size=96)
    path = export_tiled(_model(0), tmp_path / "lb.onnx", spec, THRESHOLDS, {"resize": "letterbox"})
    image = np.full((120, 40, 3), 140, dtype=np.uint8)  # tall: two thirds of the square are padding
    file = tmp_path / "tall.png"
    Image.fromarray(image).save(file)
    predictor = open_predictor(path)
    valid = valid_masks([file], 96, "letterbox")  # the run's validity masks (mask_geometry: no crop)
    maps, scores = score_artifact(predictor, predictor.load(file).model_input[None], valid)
    assert valid is not None and float(maps.max()) > float(scores[0])  # the padding scores higher than the image
    pred = predictor.predict([str(file)])[0]
    assert pred.score == float(scores[0])
    assert pred.normalized_score == pytest.approx(float(normalize_scores(scores, 1.0, 0.0, 2.0)[0]))  # as the graph
    served = OnnxAnomalyModel().load(path, runtime="onnxruntime")
    row = served.predict(None, pd.DataFrame({"image": [encode_png(image)]}), params={"return_maps": False}).iloc[0]
    assert row["image_score"] == pred.score and row["normalized_score"] == pred.normalized_score
