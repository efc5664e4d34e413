"""int8 ONNX: the network is quantized, pre/post-processing stay float, thresholds are the int8 file's own, and
the gate measures on validation images the calibration did not see.

The gate's verdicts on a trained model (a good graph passes, a degraded one is refused) are in
tests/integration/test_int8_gate.py: an untrained model's maps carry no signal to judge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from adkd.errors import ConfigError
from adkd.models.zoo import build_model
from adkd.pipelines.export import OUTPUT_NAMES, export_onnx, read_metadata, write_thresholds
from adkd.pipelines.export.int8_gate import (
    GateBounds,
    Int8Gate,
    gate_images,
    gate_scores,
    int8_gate,
    split_validation,
)
from adkd.pipelines.export.onnx_export import _noise_images
from adkd.pipelines.export.quantize import (
    QuantizationRefused,
    cpu_has_vnni,
    gate_reference,
    int8_path_for,
    quantize_graph,
    quantize_onnx,
    run_graph,
)
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


def _validation(n: int = 12) -> np.ndarray:
    return _noise_images(n, SIZE, seed=1).numpy()


def _int8_weight_peak(path: Path) -> int:
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.data_type == 3]
    return int(max(np.abs(w.astype(np.int32)).max() for w in weights if w.size > 1))


def test_weights_take_7_bits_where_the_cpu_lacks_vnni(fp32: Path, tmp_path: Path) -> None:
    # Without VNNI, ONNX Runtime's int8 kernels add u8 x s8 products in 16 bits: 8-bit weights saturate there.
    # The default follows this CPU (checked in test_int8_quantizes_only_the_network); here the other choice.
    other = quantize_graph(fp32, _validation(6), tmp_path / "other.int8.onnx", reduce_range=cpu_has_vnni())
    bits = 7 if cpu_has_vnni() else 8
    assert read_metadata(other)["int8_weight_bits"] == bits
    assert (_int8_weight_peak(other) <= 64) if bits == 7 else (_int8_weight_peak(other) == 127)


def test_int8_quantizes_only_the_network(fp32: Path, tmp_path: Path) -> None:
    out = quantize_graph(fp32, _validation(6), tmp_path / "model.int8.onnx")
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
    assert meta["precision"] == "int8" and "parity" not in meta and "metrics" not in meta
    # 7-bit weights where this CPU lacks VNNI (8-bit ones saturate in ONNX Runtime's kernels there)
    if cpu_has_vnni():
        assert meta["int8_weight_bits"] == 8 and _int8_weight_peak(out) == 127
    else:
        assert meta["int8_weight_bits"] == 7 and _int8_weight_peak(out) <= 64
    assert meta["thresholds"] == read_metadata(fp32)["thresholds"]  # fp32's constants until they are refitted
    # int8 follows fp32 closely without computing the same numbers (the network really runs in int8).
    _, scores, _ = run_graph(out, _validation())
    _, fp32_scores, _ = run_graph(fp32, _validation())
    assert float(np.corrcoef(fp32_scores, scores)[0, 1]) > 0.95
    assert not np.allclose(scores, fp32_scores, rtol=1e-4) and np.allclose(scores, fp32_scores, rtol=0.05)


def test_int8_fits_its_own_thresholds_on_the_calibration_half(fp32: Path, tmp_path: Path) -> None:
    images = _validation()
    out, gate = quantize_onnx(fp32, images, tmp_path / "m.int8.onnx", enforce_gate=False, threshold_quantile=0.9)
    cal, held = split_validation(len(images), seed=0)
    assert (gate.n_calibration, gate.n_normals) == (len(cal), len(held)) == (6, 6)
    t = read_metadata(out)["thresholds"]
    maps, scores, norms = run_graph(out, images[cal])
    assert t["image"] == pytest.approx(float(np.quantile(scores, 0.9)), rel=1e-6)
    assert t["score_max"] == pytest.approx(float(max(maps.max(), scores.max())), rel=1e-6)
    # The graph's normalised score uses the refitted constants: 0.5 at the new threshold.
    expected = np.clip((scores - t["image"]) / (t["score_max"] - t["score_min"]) + 0.5, 0, 1)
    np.testing.assert_allclose(norms, expected, atol=1e-5)
    assert t != read_metadata(fp32)["thresholds"]
    assert gate.int8_image_threshold == pytest.approx(t["image"], rel=1e-6)
    meta = read_metadata(out)
    assert meta["int8_gate"]["n_normals"] == 6 and meta["int8_gate"]["ok"] == gate.ok
    assert OnnxPredictor(out).image_size == SIZE


def test_write_thresholds_rewrites_an_exported_graph(fp32: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(fp32.read_bytes())
    new = {"image": 0.4, "pixel": 0.35, "score_min": 0.1, "score_max": 0.9}
    assert write_thresholds(copy, new) == new
    _, scores, norms = run_graph(copy, _validation(4))
    np.testing.assert_allclose(norms, np.clip((scores - 0.4) / 0.8 + 0.5, 0, 1), atol=1e-6)
    assert read_metadata(copy)["thresholds"] == new
    onnx.checker.check_model(onnx.load(str(copy)), full_check=True)


def test_refusal_is_one_line_and_leaves_no_file(fp32: Path, tmp_path: Path) -> None:
    target = tmp_path / "refused.int8.onnx"
    with pytest.raises(QuantizationRefused) as info:
        quantize_onnx(fp32, _validation(), target, bounds=GateBounds(min_score_correlation=1.01))
    message = str(info.value)
    assert "\n" not in message and "refused on 6 held-out validation images: " in message
    assert "image scores correlate" in message and "(needs >= 1.01)" in message
    assert not target.exists() and not list(tmp_path.iterdir())


def test_gate_on_shared_fp32_scores_is_the_gate_on_the_fp32_model(fp32: Path, tmp_path: Path) -> None:
    images = _validation()
    gate_set = gate_images(torch.from_numpy(images).permute(0, 3, 1, 2), seed=3, quantile=0.9, map_size=SIZE)
    int8 = OnnxPredictor(quantize_graph(fp32, gate_set.calibration, tmp_path / "m.int8.onnx"))
    reference = gate_reference(fp32, images, seed=3, threshold_quantile=0.9)  # what OpenVINO's int8 then reuses
    # The reference carries the gate images it was scored on: those the same arguments make (gated_int8 reuses them).
    for part in ("calibration", "normals", "defects"):
        assert np.array_equal(np.asarray(getattr(reference.images, part)), np.asarray(getattr(gate_set, part)))
    shared = int8_gate(reference, int8, reference.images).to_dict()
    assert shared == int8_gate(OnnxPredictor(fp32), int8, gate_set).to_dict()
    with pytest.raises(ValueError, match="not those of these gate images"):  # scored on another set of images
        int8_gate(reference, int8, gate_set)
    with pytest.raises(ValueError, match="not those of these gate images"):  # no calibration scores: no threshold
        int8_gate(gate_scores(OnnxPredictor(fp32), gate_set, calibration=False), int8, gate_set)


def test_validation_images_are_checked(fp32: Path) -> None:
    with pytest.raises(ConfigError, match=r"validation images must be uint8 \[N,64,64,3\]"):
        quantize_onnx(fp32, _validation().astype(np.float32))
    with pytest.raises(ConfigError, match=r"needs at least 8 validation images \(4 to calibrate, 4 held out"):
        quantize_onnx(fp32, _validation(7))


def test_split_keeps_calibration_and_gate_apart() -> None:
    cal, held = split_validation(9, seed=3)
    assert len(cal) == 5 and len(held) == 4 and not set(cal) & set(held) and set(cal) | set(held) == set(range(9))
    again = split_validation(9, seed=3)
    assert np.array_equal(cal, again[0]) and not np.array_equal(cal, split_validation(9, seed=4)[0])


def _gate(**values: float) -> Int8Gate:
    counts = {"n_calibration": 21, "n_normals": 21, "n_defects": 21, "fp32_false_positives": 1,
              "int8_false_positives": 1, "allowed_extra_false_positives": 1}  # fmt: skip
    figures = {"score_correlation": 0.99, "map_correlation": 0.99, "fp32_image_auroc": 0.9, "int8_image_auroc": 0.9,
               "fp32_pixel_auroc": 0.95, "int8_pixel_auroc": 0.95, "int8_image_threshold": 0.3}  # fmt: skip
    base = {**counts, **figures, "source": "validation images"}
    return Int8Gate(**{**base, **values})


def test_gate_bounds() -> None:
    assert _gate().ok
    assert _gate(int8_false_positives=2).ok  # one more than fp32: allowed
    assert _gate(int8_false_positives=3).problems() == [
        "3 of 21 held-out normals flagged against fp32's 1 (allowed 1 more)"
    ]
    assert _gate(map_correlation=0.9).problems() == ["anomaly maps correlate 0.9000 (needs >= 0.95)"]
    assert _gate(int8_pixel_auroc=0.90).ok  # reported, not gated
    assert _gate(int8_image_auroc=0.895).ok  # within 0.01
    assert _gate(int8_image_auroc=0.88).problems() == ["synthetic-defect image AUROC fell 0.9000 -> 0.8800"]
    # On 4 normals and 4 defects one swapped pair moves the AUROC by 1/16: allowed, two are not.
    assert _gate(n_normals=4, n_defects=4, fp32_image_auroc=1.0, int8_image_auroc=15 / 16).ok
    assert not _gate(n_normals=4, n_defects=4, fp32_image_auroc=1.0, int8_image_auroc=14 / 16).ok
    assert not _gate(score_correlation=float("nan")).ok  # an undefined figure never passes


def test_int8_is_picked_on_request(fp32: Path, tmp_path: Path) -> None:
    folder = tmp_path / "version"
    folder.mkdir()
    plain = folder / "model.onnx"
    plain.write_bytes(fp32.read_bytes())
    with pytest.raises(ConfigError, match=r"has no int8 sibling model\.int8\.onnx"):
        resolve_onnx(str(plain), "sqlite:///unused.db", tmp_path, int8=True)
    with pytest.raises(ConfigError, match="holds no int8 ONNX file"):
        resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path, int8=True)
    int8 = quantize_graph(plain, _validation(6), int8_path_for(plain))
    assert int8 == folder / "model.int8.onnx"
    assert resolve_onnx(str(plain), "sqlite:///unused.db", tmp_path, int8=True)[0] == int8
    assert resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path, int8=True)[0] == int8
    assert resolve_onnx(str(folder), "sqlite:///unused.db", tmp_path)[0] == plain  # fp32 unless asked


@pytest.mark.parametrize("scheme", ["qdq-s8s8", "qop-u8s8"])
def test_each_scheme_writes_its_own_layout(fp32: Path, tmp_path: Path, scheme: str) -> None:
    from adkd.pipelines.export.quantize import INT8_SCHEMES

    out = quantize_graph(fp32, _validation(6), tmp_path / "m.int8.onnx", scheme=scheme)
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
    maps, scores, _ = run_graph(out, _validation(4))
    assert np.isfinite(maps).all() and np.isfinite(scores).all()


def test_unknown_scheme_is_a_clear_error(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 scheme 'qdq-u4' is not one of qdq-s8s8"):
        quantize_onnx(fp32, _validation(), tmp_path / "x.onnx", scheme="qdq-u4")
    assert not (tmp_path / "x.onnx").exists()


def test_config_schemes_are_the_quantizer_schemes() -> None:
    import typing

    from adkd.pipelines.export.schemes import DEFAULT_INT8_SCHEME, INT8_SCHEMES
    from adkd.pipelines.train.config import Int8Scheme, TrainConfig

    assert set(typing.get_args(Int8Scheme)) == set(INT8_SCHEMES)
    assert TrainConfig.model_fields["int8_scheme"].default == DEFAULT_INT8_SCHEME in INT8_SCHEMES


def test_image_level_int8_metrics_have_no_pixel_figures(fp32: Path, tmp_path: Path) -> None:
    from adkd.pipelines.data.dataset import CategoryData
    from adkd.pipelines.train.artifact_steps import int8_for_run
    from adkd.pipelines.train.config import TrainConfig

    nchw = torch.from_numpy(_validation(16)).permute(0, 3, 1, 2).contiguous()
    full = CategoryData(
        category="parts", train=nchw[:2], val=nchw[:8], test=nchw[8:], test_masks=torch.zeros(8, 1, SIZE, SIZE),
        test_labels=torch.tensor([0, 1] * 4), test_defects=["good", "bad"] * 4, test_paths=[Path("x.png")] * 8,
        train_paths=[], val_paths=[Path("v.png")] * 8, has_masks=False,
    )  # fmt: skip
    config = TrainConfig(category="parts", data=str(tmp_path), model="stfpm", image_size=SIZE, num_threads=1)
    model = tmp_path / "model.onnx"
    model.write_bytes(fp32.read_bytes())
    outcome = int8_for_run(model, full, config, enforce_gate=False)
    assert outcome.path is not None and outcome.path.is_file()
    assert {"test_int8/image_auroc", "test_int8/f1_max"} <= set(outcome.metrics)
    assert not [k for k in outcome.metrics if k.startswith("test_int8/") and ("pixel" in k or "aupro" in k)]
    assert set(read_metadata(outcome.path)["metrics"]) == {"test/image_auroc", "test/f1_max"}
