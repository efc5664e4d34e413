"""int8 ONNX: the network is quantized, pre/post-processing stay float, and the accuracy gate can refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from adkd.errors import ConfigError
from adkd.models.zoo import build_model
from adkd.pipelines.export import OUTPUT_NAMES, export_onnx, read_metadata
from adkd.pipelines.export.onnx_export import _noise_images
from adkd.pipelines.export.quantize import QuantizationRefused, int8_path_for, quantize_onnx, run_graph
from adkd.pipelines.predict import OnnxPredictor
from adkd.platform.registry.resolve import resolve_onnx

SIZE = 64
THRESHOLDS = {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("stfpm", backbone="mobilenet_v2", weights="none").eval()
    return export_onnx(model, tmp_path_factory.mktemp("int8") / "model.onnx", SIZE, THRESHOLDS, {"model": "stfpm"})


def _calibration() -> np.ndarray:
    return _noise_images(8, SIZE, seed=1).numpy()


def test_int8_quantizes_only_the_network(fp32: Path, tmp_path: Path) -> None:
    out, gate = quantize_onnx(fp32, _calibration(), tmp_path / "model.int8.onnx", min_correlation=0.0)
    assert out == tmp_path / "model.int8.onnx" and out.is_file()
    graph = onnx.load(str(out)).graph
    ops = list(graph.node)
    dequantized = {out for n in ops if n.op_type == "DequantizeLinear" for out in n.output}
    assert sum(n.op_type == "QuantizeLinear" for n in ops) > 20
    # Preprocessing and the anomaly map (its Gaussian blur is a Conv) compute in float: no input of theirs
    # is dequantized, except the network's features that the map compares.
    pre = [n for n in ops if n.name.startswith("/preprocess")]
    assert pre and not any(i in dequantized for n in pre for i in n.input)
    blur = [n for n in ops if n.name.startswith("/model/anomaly_map") and n.op_type == "Conv"]
    assert blur and not any(n.input[1] in dequantized for n in blur)
    network_convs = [n for n in ops if n.op_type == "Conv" and n.name.startswith(("/model/student", "/model/teacher"))]
    assert network_convs and all(n.input[1] in dequantized for n in network_convs)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)

    meta = read_metadata(out)
    assert meta["precision"] == "int8" and meta["thresholds"] == read_metadata(fp32)["thresholds"]
    assert meta["int8_gate"]["n_images"] == 8 and meta["int8_gate"]["score_correlation"] == gate.score_correlation
    maps, scores, norms = run_graph(out, _calibration())
    assert maps.shape == (8, 1, SIZE, SIZE) and maps.dtype == np.float32 and scores.shape == norms.shape == (8,)
    assert -1.0 <= gate.score_correlation <= 1.0
    assert OnnxPredictor(out).image_size == SIZE


def test_gate_refuses_and_leaves_no_file(fp32: Path, tmp_path: Path) -> None:
    target = tmp_path / "refused.int8.onnx"
    with pytest.raises(QuantizationRefused, match=r"refused on 8 validation images: image scores correlate"):
        quantize_onnx(fp32, _calibration(), target, min_correlation=1.01)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_calibration_images_are_checked(fp32: Path) -> None:
    with pytest.raises(ConfigError, match=r"calibration images must be uint8 \[N,64,64,3\]"):
        quantize_onnx(fp32, _calibration().astype(np.float32))
    with pytest.raises(ConfigError, match="at least 4 held-out normal images"):
        quantize_onnx(fp32, _calibration()[:2])


def test_int8_is_picked_on_request(fp32: Path, tmp_path: Path) -> None:
    folder = tmp_path / "version"
    folder.mkdir()
    plain = folder / "model.onnx"
    plain.write_bytes(fp32.read_bytes())
    with pytest.raises(ConfigError, match=r"has no int8 sibling model\.int8\.onnx"):
        resolve_onnx(str(plain), "sqlite:///unused.db", tmp_path, int8=True)
    with pytest.raises(ConfigError, match="holds no int8 ONNX file"):
        resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path, int8=True)
    int8, _ = quantize_onnx(plain, _calibration(), min_correlation=0.0)
    assert int8 == int8_path_for(plain) == folder / "model.int8.onnx"
    assert resolve_onnx(str(plain), "sqlite:///unused.db", tmp_path, int8=True)[0] == int8
    assert resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path, int8=True)[0] == int8
    assert resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path)[0] == plain  # fp32 unless asked


def test_int8_graph_gets_its_own_thresholds(fp32: Path, tmp_path: Path) -> None:
    images = _calibration()
    out, _ = quantize_onnx(fp32, images, tmp_path / "m.int8.onnx", enforce_gate=False, threshold_quantile=0.9)
    t = read_metadata(out)["thresholds"]
    maps, scores, norms = run_graph(out, images)
    assert t["image"] == pytest.approx(float(np.quantile(scores, 0.9)), rel=1e-6)
    assert t["score_max"] == pytest.approx(float(max(maps.max(), scores.max())), rel=1e-6)
    # The graph's normalised score uses the refitted constants: 0.5 at the new threshold.
    expected = np.clip((scores - t["image"]) / (t["score_max"] - t["score_min"]) + 0.5, 0, 1)
    np.testing.assert_allclose(norms, expected, atol=1e-5)
    assert t != read_metadata(fp32)["thresholds"]


@pytest.mark.parametrize("scheme", ["qdq-s8s8", "qop-u8s8"])
def test_each_scheme_writes_its_own_layout(fp32: Path, tmp_path: Path, scheme: str) -> None:
    from adkd.pipelines.export.quantize import INT8_SCHEMES

    out, _ = quantize_onnx(fp32, _calibration(), tmp_path / "m.int8.onnx", min_correlation=0.0, scheme=scheme)
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    quant_format, _, weight = INT8_SCHEMES[scheme]
    if quant_format == "QOperator":
        assert "QLinearConv" in ops
        conv = next(n for n in graph.node if n.op_type == "QLinearConv")
        weight_type = next(i.data_type for i in graph.initializer if i.name == conv.input[3])
    else:
        assert "QLinearConv" not in ops and ops >= QDQ
        dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
        conv = next(n for n in graph.node if n.op_type == "Conv" and n.input[1] in dq)
        weight_type = next(i.data_type for i in graph.initializer if i.name == dq[conv.input[1]].input[0])
    assert weight == "QInt8" and weight_type == onnx.TensorProto.INT8, (scheme, weight_type)
    assert read_metadata(out)["int8_scheme"] == scheme
    maps, scores, _ = run_graph(out, _calibration())
    assert np.isfinite(maps).all() and np.isfinite(scores).all()


def test_unknown_scheme_is_a_clear_error(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 scheme 'qdq-u4' is not one of qdq-s8s8"):
        quantize_onnx(fp32, _calibration(), tmp_path / "x.onnx", scheme="qdq-u4")
    assert not (tmp_path / "x.onnx").exists()


def test_config_schemes_are_the_quantizer_schemes() -> None:
    import typing

    from adkd.pipelines.export.quantize import DEFAULT_INT8_SCHEME, INT8_SCHEMES
    from adkd.pipelines.train.config import Int8Scheme

    assert set(typing.get_args(Int8Scheme)) == set(INT8_SCHEMES)
    assert DEFAULT_INT8_SCHEME in INT8_SCHEMES


def test_flips_among_the_fitted_images_are_reorderings_not_moved_verdicts() -> None:
    from adkd.pipelines.export.quantize import count_flips

    # fp32 flags image 0 (its top), int8 flags image 2 (its top): the top two swapped places.
    ref = np.array([0.036, 0.020, 0.033, 0.050, 0.010])
    got = np.array([0.044, 0.021, 0.046, 0.060, 0.030])
    ref_norm = (ref - 0.035) / 0.04 + 0.5  # image 0 at 0.525, image 2 at 0.45: neither within 0.02 of 0.5
    fitted = np.array([True, True, True, False, False])  # images 0-2 fitted the int8 threshold
    assert count_flips(ref, ref_norm, 0.035, got, 0.045) == (2, 0)
    assert count_flips(ref, ref_norm, 0.035, got, 0.045, fitted) == (0, 2)
    # A flip of an image the threshold was not fitted on still counts: image 4 crosses in int8.
    assert count_flips(ref, ref_norm, 0.035, got, 0.025, fitted) == (1, 1)  # image 2 is a reordering
