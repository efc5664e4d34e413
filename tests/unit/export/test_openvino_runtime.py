"""OpenVINO beside ONNX Runtime: parity with PyTorch, its int8 (NNCF) behind the gate, and ``runtime=auto``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from adkd.errors import ConfigError
from adkd.models.preprocess import normalize
from adkd.models.zoo import build_model
from adkd.pipelines.export import export_onnx, read_metadata
from adkd.pipelines.export.float_variants import add_test_metrics, measure_variant, write_records
from adkd.pipelines.export.int8_gate import GateBounds
from adkd.pipelines.export.onnx_export import _noise_images, set_metadata, write_thresholds
from adkd.pipelines.export.openvino_int8 import OpenVinoQuantizationRefused, ov_int8_path_for, quantize_openvino
from adkd.pipelines.export.quantize import gate_reference, quantize_graph
from adkd.pipelines.export.runtime_choice import choose_runtime, time_variants, timing_images
from adkd.pipelines.export.tiled import export_tiled
from adkd.pipelines.inference.artifact import score_artifact
from adkd.pipelines.predict import open_predictor
from adkd.pipelines.predict.openvino_predictor import OpenVinoPredictor, cpu_has_bf16, graph_digest
from adkd.pipelines.predict.runtimes import check_runtime, variant_path
from adkd.pipelines.tiling.model import PerPositionModel
from adkd.pipelines.tiling.spec import TilingSpec

SIZE = 64
THRESHOLDS = {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6}


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _validation() -> np.ndarray:
    return _noise_images(10, SIZE, seed=1).numpy()


@pytest.fixture(scope="module", autouse=True)
def nncf_once() -> Iterator[dict[tuple[str, str, str], bytes]]:
    """NNCF's int8 graph of each (fp32 file, calibration images, preset) is computed once in this module.

    The gate tests quantize the same graph on the same images up to four times each (every refusal walks both
    presets); NNCF's result for identical inputs is identical, and each call took 3.7 s of the module's 39 CPU-s.
    The first call of each runs the real ``nncf_quantize``; later ones write its bytes to the new path.
    """
    from adkd.pipelines.export import openvino_int8

    real, done = openvino_int8.nncf_quantize, {}

    def quantize(source: Path, calibration: np.ndarray, out: Path, preset: str = "performance") -> Path:
        key = (
            hashlib.sha256(source.read_bytes()).hexdigest(),
            hashlib.sha256(calibration.tobytes()).hexdigest(),
            preset,
        )
        if key not in done:
            done[key] = real(source, calibration, out, preset).read_bytes()
        out.write_bytes(done[key])
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino_int8, "nncf_quantize", quantize)
        yield done


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    out = {}
    for name in ("rd", "stfpm"):
        torch.manual_seed(0)
        model = build_model(name, backbone="resnet18", weights="none").eval()
        folder = tmp_path_factory.mktemp(name)
        out[name] = (export_onnx(model, folder / "model.onnx", SIZE, THRESHOLDS, {"model": name}), model)
    return out


@pytest.mark.parametrize("name", ["rd", "stfpm"])
def test_openvino_f32_matches_pytorch(models: dict, name: str, tmp_path: Path) -> None:
    path, model = models[name]
    predictor = open_predictor(path, "openvino", cache_dir=tmp_path)
    assert predictor.runtime == "openvino" and predictor.precision == "f32"
    for n, seed in ((1, 1), (3, 2)):  # the batch axis stays dynamic in OpenVINO
        images = _images(n, seed)
        maps, scores, norms = predictor.run(images.numpy())
        with torch.inference_mode():
            ref_map, ref_score = (t.numpy() for t in model(normalize(images.permute(0, 3, 1, 2))))
        assert maps.shape == (n, SIZE, SIZE) and scores.shape == norms.shape == (n,)
        span = float(ref_map.max() - ref_map.min())
        assert span > 0
        # The tolerances of the ONNX Runtime parity check: the f32 hint keeps bf16 out on CPUs that have it.
        assert np.abs(maps - ref_map[:, 0]).max() <= 1e-4 * span
        assert np.abs(scores - ref_score).max() <= 1e-5 * max(1.0, float(np.abs(ref_score).max()))
        expected_norm = np.clip((ref_score - 0.3) / (0.6 - 0.05) + 0.5, 0.0, 1.0)
        np.testing.assert_allclose(norms, expected_norm, atol=1e-5)


def test_bf16_is_asked_for_and_differs_from_f32(models: dict, tmp_path: Path) -> None:
    path, _ = models["rd"]
    images = _images(3, 4).numpy()
    if not cpu_has_bf16():  # no skip: on such a CPU (an AMD EPYC with avx2 alone) the ask is refused, in one line
        with pytest.raises(
            ConfigError, match=r"this CPU has no bf16 support \(AVX512-BF16/AMX\): use runtime openvino"
        ):
            open_predictor(path, "openvino-bf16", cache_dir=tmp_path)
        return
    f32 = open_predictor(path, "openvino", cache_dir=tmp_path).run(images)[0]
    bf16 = open_predictor(path, "openvino-bf16", cache_dir=tmp_path)
    assert bf16.runtime == "openvino-bf16"
    half = bf16.run(images)[0]
    assert not np.allclose(half, f32, rtol=1e-4)  # really bf16: OpenVINO's default here, not the f32 kept above
    assert np.corrcoef(half.ravel(), f32.ravel())[0, 1] > 0.9


def test_the_default_cache_is_adkds_own(models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``cache_dir`` the IR goes where every other cache of adkd's goes (ADKD_CACHE_DIR), not into the home
    folder (seen: the suite's OpenVINO loads wrote ~/.cache/adkd/openvino while ADKD_CACHE_DIR was set)."""
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "cache"))
    path = models["stfpm"][0]
    assert OpenVinoPredictor(path).source == "converted"
    assert (tmp_path / "cache" / "openvino" / graph_digest(path) / "model.xml").is_file()


def test_converted_model_is_cached_by_content(models: dict, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(models["stfpm"][0].read_bytes())
    first = OpenVinoPredictor(path, cache_dir=tmp_path)
    again = OpenVinoPredictor(path, cache_dir=tmp_path)
    assert (first.source, again.source) == ("converted", "cache")
    entry = tmp_path / "openvino" / graph_digest(path)
    # Metadata written into the file later (metrics, the runtime choice) keeps its entry; new thresholds do not.
    set_metadata(path, {"metrics": json.dumps({"test/image_auroc": 0.5})})
    assert graph_digest(path) == entry.name and OpenVinoPredictor(path, cache_dir=tmp_path).source == "cache"
    write_thresholds(path, {**THRESHOLDS, "image": 0.35})
    assert graph_digest(path) != entry.name and OpenVinoPredictor(path, cache_dir=tmp_path).source == "converted"
    assert len(list((tmp_path / "openvino").iterdir())) == 2
    assert (entry / "model.xml").is_file()
    # Weights stay fp32 in the cache (OpenVINO's save_model would halve them by default).
    weights = sum(np.prod(i.dims) for i in onnx.load(str(path)).graph.initializer if i.data_type == 1)
    assert (entry / "model.bin").stat().st_size >= 4 * weights * 0.9
    images = _images(2, 5).numpy()
    for got, want in zip(again.run(images), first.run(images)):
        np.testing.assert_array_equal(got, want)


def test_runtime_names_are_checked(models: dict, tmp_path: Path) -> None:
    path, _ = models["stfpm"]
    assert check_runtime("OV") == "openvino" and check_runtime(None) == "auto"
    with pytest.raises(ConfigError, match="runtime 'tensorrt' is not one of auto, onnxruntime, openvino"):
        open_predictor(path, "tensorrt")
    with pytest.raises(ConfigError, match=r"model\.ov\.int8\.onnx does not exist: .*adkd export --int8"):
        open_predictor(path, "openvino-int8")
    auto = open_predictor(path)
    assert (auto.runtime, auto.runtime_reason) == ("onnxruntime", "auto: no runtime was timed at export")


def test_both_runtimes_keep_to_the_processs_thread_budget(
    models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray gives each worker OMP_NUM_THREADS = its CPUs; ONNX Runtime and OpenVINO must not take every core."""
    path, _ = models["stfpm"]

    def threads(runtime: str, **kwargs: int) -> tuple[int, int]:
        predictor = open_predictor(path, runtime, cache_dir=tmp_path, **kwargs)
        if runtime == "onnxruntime":
            return predictor.session.get_session_options().intra_op_num_threads, 0
        return 0, int(predictor.compiled.get_property("INFERENCE_NUM_THREADS"))

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads("onnxruntime") == (1, 0) and threads("openvino") == (0, 1)
    assert threads("onnxruntime", threads=2) == (2, 0)  # an explicit count wins
    # What `auto` records for its timings is what they ran on.
    timed = tmp_path / "model.onnx"
    timed.write_bytes(path.read_bytes())
    assert choose_runtime(timed, repeats=1, rounds=1)["threads"] == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads("onnxruntime") == (0, 0)  # nothing set: ONNX Runtime's own default (0 = a thread per core)


def test_nncf_int8_is_gated_and_runs_in_openvino(models: dict, tmp_path: Path) -> None:
    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    with pytest.raises(OpenVinoQuantizationRefused, match=r"refused on \d+ held-out validation images: image scores"):
        quantize_openvino(fp32, _validation(), bounds=GateBounds(min_score_correlation=1.01))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # nothing half-written

    # A random-weight teacher on noise images: AUROCs on 5 synthetic defects are coin flips, so only the
    # agreement bounds are held here (the refusal above shows the gate is enforced).
    loose = GateBounds(max_auroc_drop=1.0, max_fpr_rise=1.0)
    out, gate = quantize_openvino(fp32, _validation(), bounds=loose)
    assert out == ov_int8_path_for(fp32) == variant_path(fp32, "openvino-int8") and gate.ok
    assert gate.score_correlation >= 0.95 and gate.map_correlation >= 0.95
    meta = read_metadata(out)
    assert (meta["precision"], meta["runtime"]) == ("int8", "openvino")
    # Both presets passed here; the kept one is the closer of the two on the held-out images.
    candidates = meta["int8_candidates"]
    assert set(candidates) == {"nncf-openvino", "nncf-openvino-mixed"}
    assert candidates[meta["int8_scheme"]] == max(candidates.values()) == round(gate.score_correlation, 6)
    assert meta["int8_gate"]["ok"] is True and "parity" not in meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ov.int8.onnx"]
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith("/model/")]
    blur = [n for n in convs if n.name.startswith("/model/anomaly_map")]
    network = [n for n in convs if not n.name.startswith("/model/anomaly_map")]
    assert network and all(n.input[1] in dequantized for n in network)  # the network's weights are int8
    assert blur and not any(n.input[1] in dequantized for n in blur)  # the map's Gaussian stays float

    int8 = open_predictor(out)  # auto: the file runs on what it was made for
    assert int8.runtime == "openvino-int8" and int8.image_threshold == pytest.approx(meta["thresholds"]["image"])
    maps, scores, _ = int8.run(_validation()[:4])
    _, ref, _ = open_predictor(fp32, "onnxruntime").run(_validation()[:4])
    assert maps.shape == (4, SIZE, SIZE) and not np.allclose(scores, ref, rtol=1e-4)
    assert open_predictor(fp32, "openvino-int8").runtime == "openvino-int8"


def _zero_network_weights(path: Path) -> None:
    """A wrong int8 model: every quantized weight of the network dequantized to zero."""
    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    weights = {i.name for i in model.graph.initializer if i.data_type in int8}
    scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    for init in model.graph.initializer:
        if init.name in scales:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(init)), init.name))
    assert scales
    onnx.save(model, str(path))


def _degrade_network_weights(path: Path, spread: float) -> None:
    """A less faithful int8 model: each quantized weight's scale off by a seeded factor in 1 +- ``spread``."""
    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    weights = {i.name for i in model.graph.initializer if i.data_type in int8}
    scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if init.name in scales:
            value = onnx.numpy_helper.to_array(init)
            off = value * (1 + rng.uniform(-spread, spread, value.shape)).astype(value.dtype)
            init.CopyFrom(onnx.numpy_helper.from_array(off, init.name))
    onnx.save(model, str(path))


@pytest.mark.parametrize("degraded, kept", [("performance", "nncf-openvino-mixed"), ("mixed", "nncf-openvino")])
def test_of_two_passing_presets_the_closer_to_fp32_is_kept(
    models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degraded: str, kept: str
) -> None:
    from adkd.pipelines.export import openvino_int8

    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    real = openvino_int8.nncf_quantize

    def quantize(source: Path, calibration: np.ndarray, out: Path, preset: str = "performance") -> Path:
        path = real(source, calibration, out, preset)
        if preset == degraded:
            _degrade_network_weights(path, 0.05)
        return path

    monkeypatch.setattr(openvino_int8, "nncf_quantize", quantize)
    # Bounds both pass: here the choice between two passing files is under test, not the gate.
    loose = GateBounds(min_score_correlation=0.5, min_map_correlation=0.5, max_auroc_drop=1.0, max_fpr_rise=1.0)
    out, gate = quantize_openvino(fp32, _validation(), bounds=loose)
    meta = read_metadata(out)
    candidates = meta["int8_candidates"]
    assert meta["int8_scheme"] == kept and all(isinstance(v, float) for v in candidates.values()), candidates
    assert candidates[kept] == round(gate.score_correlation, 6) > candidates[openvino_int8.SCHEMES[degraded]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ov.int8.onnx"]


def test_a_refused_performance_preset_falls_back_to_the_mixed_one(
    models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adkd.pipelines.export import openvino_int8

    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    real, broken = openvino_int8.nncf_quantize, {"performance"}

    def quantize(source: Path, calibration: np.ndarray, out: Path, preset: str = "performance") -> Path:
        path = real(source, calibration, out, preset)
        if preset in broken:
            _zero_network_weights(path)
        return path

    monkeypatch.setattr(openvino_int8, "nncf_quantize", quantize)
    loose = GateBounds(max_auroc_drop=1.0, max_fpr_rise=1.0)  # noise images: agreement bounds only
    out, gate = quantize_openvino(fp32, _validation(), bounds=loose)
    meta = read_metadata(out)
    assert gate.ok and meta["int8_scheme"] == "nncf-openvino-mixed"
    assert meta["int8_candidates"]["nncf-openvino"] == "refused"
    assert open_predictor(out).runtime == "openvino-int8"

    out.unlink()
    broken.add("mixed")
    with pytest.raises(OpenVinoQuantizationRefused) as refused:
        quantize_openvino(fp32, _validation(), bounds=loose)
    assert "(performance preset)" in str(refused.value) and "(mixed preset)" in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # nothing half-written


def test_auto_runs_the_variant_timed_fastest(models: dict, tmp_path: Path) -> None:
    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    # A gated int8 file with its own test metrics takes part; one without metrics of its own (OpenVINO's here) does
    # not, nor does the fp32 file on OpenVINO before it was measured there: no numbers of what would run.
    ort_int8 = quantize_graph(fp32, _validation()[:4], variant_path(fp32, "onnxruntime-int8"))
    set_metadata(ort_int8, {"int8_gate": json.dumps({"ok": True})})
    ov_int8 = variant_path(fp32, "openvino-int8")
    ov_int8.write_bytes(ort_int8.read_bytes())
    set_metadata(ort_int8, {"metrics": json.dumps({"test/image_auroc": 0.9})})
    record = choose_runtime(fp32, threads=1, repeats=2, rounds=1)
    timings = record["timings_ms_per_image"]
    assert set(timings) == {"onnxruntime", "onnxruntime-int8"}
    assert record["candidates"]["onnxruntime-int8"] == {"gate_ok": True, "own_metrics": True}
    assert record["candidates"]["openvino-int8"] == {"gate_ok": True, "own_metrics": False}
    assert "not measured at export" in record["candidates"]["openvino"]["skipped"]
    assert record["candidates"]["openvino-bf16"]["skipped"] == (
        "not measured at export: no thresholds or metrics of its own"
        if cpu_has_bf16()
        else "this CPU has no bf16 (AVX512-BF16/AMX)"
    )
    assert record["variant"] == min(timings, key=lambda v: timings[v]["b1_ms"])
    assert all(t["b1_ms"] > 0 and t["b8_ms"] > 0 for t in timings.values())
    assert read_metadata(fp32)["runtime_choice"]["variant"] == record["variant"]
    auto = open_predictor(fp32, cache_dir=tmp_path)
    assert auto.runtime == record["variant"] and auto.runtime_reason.startswith("auto: fastest at export on ")
    assert open_predictor(fp32, "openvino", cache_dir=tmp_path).runtime == "openvino"  # still there by name


def test_per_position_model_is_timed_on_whole_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = PerPositionModel([build_model("stfpm", backbone="resnet18", weights="none") for _ in range(2)]).eval()
    spec = TilingSpec(tile=SIZE, stride=48, mode="per_position", positions=2, height=SIZE, width=110)
    path = export_tiled(models, tmp_path / "model.onnx", spec, THRESHOLDS)
    assert timing_images(open_predictor(path)).shape[1:] == (SIZE, 110, 3)  # not one tile: 2 positions
    timings = time_variants({"onnxruntime": path}, threads=1, repeats=1, rounds=1)
    assert timings["onnxruntime"]["b1_ms"] > 0 and timings["onnxruntime"]["b8_ms"] > 0


def _measured(fp32: Path, variant: str, bounds: GateBounds) -> tuple[dict, object]:
    """``variant`` of ``fp32`` measured on the validation noise (thresholds, gate) with made-up test metrics."""
    reference = gate_reference(fp32, _validation(), threshold_quantile=0.9)
    record, gate = measure_variant(fp32, variant, _validation(), None, 0.9, reference, bounds=bounds)
    return add_test_metrics(record, {"image_auroc": 0.75}), gate


def test_the_fp32_file_measured_on_openvino_is_judged_by_its_own_numbers(models: dict, tmp_path: Path) -> None:
    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    variant = "openvino-bf16" if cpu_has_bf16() else "openvino"
    ort = open_predictor(fp32, "onnxruntime")
    before = open_predictor(fp32, variant, cache_dir=tmp_path)
    assert before.image_threshold == THRESHOLDS["image"] and not before.own_numbers  # not measured: the file's own

    loose = GateBounds(max_auroc_drop=1.0, max_fpr_rise=1.0)  # random weights on noise: AUROCs are coin flips
    record, gate = _measured(fp32, variant, loose)
    assert gate.ok and gate.n_normals == 5 and record["gate"]["ok"] is True
    _, scores = score_artifact(before, _validation())
    assert record["thresholds"]["image"] == pytest.approx(np.quantile(scores.numpy().astype(np.float64), 0.9))
    assert record["normal_scores"] == {"quantile": 0.9, "scores": pytest.approx(scores.tolist())}
    write_records(fp32, {variant: record})
    assert read_metadata(fp32)["variant_records"][variant]["metrics"] == {"test/image_auroc": 0.75}

    own = open_predictor(fp32, variant, cache_dir=tmp_path)
    assert own.own_numbers and own.image_threshold == record["thresholds"]["image"]
    assert own.runtime_reason == "asked for; judged by its own thresholds, fitted on its scores at export"
    assert own.meta["metrics"] == {"test/image_auroc": 0.75} and own.meta["normal_scores"] == record["normal_scores"]
    assert own.meta["thresholds_fitted_on"]["scored_by"] == f"model.onnx ({variant})"
    _, raw, norm = own.run(_validation()[:4])
    assert not np.allclose(norm, ort.normalized(raw))  # not the fp32 file's constants
    t = record["thresholds"]
    assert np.allclose(norm, np.clip((raw - t["image"]) / (t["score_max"] - t["score_min"]) + 0.5, 0, 1), atol=1e-6)
    verdicts = [p.anomalous for p in own.predict(list(_validation()[:4]))]
    assert verdicts == [bool(s > t["image"]) for s in raw]
    # ONNX Runtime still runs the fp32 file on the fp32 file's own numbers.
    assert open_predictor(fp32, "onnxruntime").image_threshold == ort.image_threshold == THRESHOLDS["image"]

    # A measured variant that passed its gate takes part in runtime=auto; its timing is recorded with the others.
    choice = choose_runtime(fp32, threads=1, repeats=1, rounds=1)
    assert choice["candidates"][variant] == {"gate_ok": True, "own_metrics": True}
    assert variant in choice["timings_ms_per_image"]


def test_a_variant_that_fails_its_gate_is_never_run_by_auto(models: dict, tmp_path: Path) -> None:
    source, _ = models["stfpm"]
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(source.read_bytes())
    record, gate = _measured(fp32, "openvino", GateBounds(min_score_correlation=1.01))
    assert not gate.ok and any("image scores correlate" in p for p in gate.problems())
    write_records(fp32, {"openvino": record})
    choice = choose_runtime(fp32, threads=1, repeats=1, rounds=1)
    assert choice["candidates"]["openvino"] == {"gate_ok": False, "own_metrics": True}
    assert set(choice["timings_ms_per_image"]) == {"onnxruntime"}
    assert open_predictor(fp32).runtime == "onnxruntime"
    # Asked for by name it still runs, judged by its own thresholds.
    assert open_predictor(fp32, "openvino").image_threshold == record["thresholds"]["image"]
