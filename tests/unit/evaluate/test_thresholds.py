"""Thresholds from validation normals and the [0, 1] normalisation around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adkd.errors import ConfigError, DataError
from adkd.pipelines.evaluate.thresholds import Thresholds, fit_thresholds, normalize_scores


def test_fit_thresholds_takes_quantiles_of_validation_scores_and_pixels() -> None:
    scores = np.arange(101, dtype=np.float64) / 100  # 0.00 .. 1.00
    maps = torch.linspace(-1.0, 3.0, 2 * 1 * 20 * 10).reshape(2, 1, 20, 10)
    t = fit_thresholds(scores, maps, quantile=0.99)
    assert t.image == pytest.approx(0.99)
    assert t.pixel == pytest.approx(float(np.quantile(maps.numpy(), 0.99)))
    assert t.pixel == pytest.approx(-1.0 + 4.0 * 0.99, abs=1e-6)
    assert (t.score_min, t.score_max) == (pytest.approx(-1.0), pytest.approx(3.0))


def test_image_threshold_flags_about_one_percent_of_new_normal_images() -> None:
    rng = np.random.default_rng(0)
    t = fit_thresholds(rng.normal(size=20_000), rng.normal(size=(4, 32, 32)), quantile=0.99)
    fresh = rng.normal(size=20_000)
    assert np.mean(fresh > t.image) == pytest.approx(0.01, abs=0.003)


def test_dict_round_trip_through_json() -> None:
    t = Thresholds(image=0.8, pixel=0.6, score_min=0.01, score_max=1.2)
    assert Thresholds.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_from_dict_names_missing_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="missing pixel, score_max"):
        Thresholds.from_dict({"image": 1.0, "score_min": 0.0})
    with pytest.raises(ConfigError, match="image is not finite"):
        Thresholds.from_dict({"image": "nan", "pixel": 1.0, "score_min": 0.0, "score_max": 2.0})
    with pytest.raises(ConfigError, match="number"):
        Thresholds.from_dict({"image": "high", "pixel": 1.0, "score_min": 0.0, "score_max": 2.0})


def test_normalize_maps_threshold_to_half_and_clamps() -> None:
    x = torch.tensor([0.5, 1.0, 1.5, 2.0, 4.0, -3.0])
    y = normalize_scores(x, threshold=1.0, score_min=0.0, score_max=2.0)
    torch.testing.assert_close(y, torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0, 0.0]))


def test_normalize_with_thresholds_object_and_maps() -> None:
    t = Thresholds(image=2.0, pixel=1.0, score_min=0.0, score_max=4.0)
    scores = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(normalize_scores(scores, t), torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(t.normalize_image(scores), torch.tensor([0.5, 0.75]))
    maps = torch.full((1, 1, 2, 2), 1.0)
    torch.testing.assert_close(t.normalize_map(maps), torch.full((1, 1, 2, 2), 0.5))


def test_normalize_constant_range_stays_finite() -> None:
    y = normalize_scores(torch.tensor([0.9, 1.0, 1.1]), 1.0, 1.0, 1.0)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.5, 1.0]))


def test_normalize_is_monotone_so_ranking_metrics_keep_order() -> None:
    x = torch.linspace(-2, 5, 200)
    y = normalize_scores(x, 1.0, -1.0, 3.0)
    assert torch.all(y[1:] >= y[:-1])


class _Normalizer(torch.nn.Module):
    def __init__(self, t: Thresholds) -> None:
        super().__init__()
        self.t = t

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = maps.amax(dim=(1, 2, 3))
        return self.t.normalize_map(maps), self.t.normalize_image(scores)


def test_normalize_exports_to_onnx_and_matches_torch(tmp_path) -> None:
    import onnxruntime as ort  # a hard dependency: its absence is a failure, not a skip

    t = Thresholds(image=0.7, pixel=0.4, score_min=0.05, score_max=1.1)
    module = _Normalizer(t).eval()
    maps = torch.rand(2, 1, 8, 8) * 1.5
    path = tmp_path / "normalize.onnx"
    torch.onnx.export(module, (maps,), str(path), input_names=["maps"], dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_maps, onnx_scores = session.run(None, {"maps": maps.numpy()})
    torch_maps, torch_scores = module(maps)
    np.testing.assert_allclose(onnx_maps, torch_maps.numpy(), atol=1e-6)
    np.testing.assert_allclose(onnx_scores, torch_scores.numpy(), atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        fit_thresholds([0.1, 0.2], np.zeros((1, 4, 4)), quantile=1.5)
    with pytest.raises(DataError, match="val_fraction"):
        fit_thresholds([], np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="NaN"):
        fit_thresholds([0.1, float("nan")], np.zeros((1, 4, 4)))
    with pytest.raises(ConfigError, match="score_min"):
        normalize_scores(torch.tensor([1.0]), 0.5)
