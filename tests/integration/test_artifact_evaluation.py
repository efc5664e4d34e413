"""One evaluation path, the artifact's: a run's thresholds and metrics are those of its exported file, and the
default int8 gate passes a good int8 graph and refuses a degraded one.

Two short runs of one trained-teacher stfpm on synthetic weave, bf16 autocast on and off: in each, metrics.json,
thresholds.json, model.pt, the ONNX metadata, ``adkd evaluate``, ``adkd.load(...).predict`` and ``adkd predict``
agree (same host: exactly; ``evaluate.report`` states the tolerance across hosts).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import adkd
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.evaluate.report import METRIC_TOLERANCE, SCORE_TOLERANCE
from adkd.pipelines.export import read_metadata
from adkd.pipelines.export.quantize import QuantizationRefused, quantize_onnx
from adkd.pipelines.train.artifact_steps import run_data
from adkd.pipelines.train.artifacts import evaluate_checkpoint
from adkd.pipelines.train.callbacks import TrainResult
from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config
from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / ".." / "shared" / "weights" / "mobilenet_v2_imagenet_features.pth"
KEYS = ("test/image_auroc", "test/pixel_auroc", "test/aupro", "test/f1_max")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weave")
    synthesize(root, ["weave"], size=64, n_train=40, n_test=10, seed=0)  # 8 validation images: 4 + 4 for int8
    return root


def _train(data: Path, out: Path, amp: bool) -> TrainResult:
    if not WEIGHTS.is_file():
        pytest.fail(f"the shared ImageNet MobileNetV2 teacher is missing: {WEIGHTS}")
    overrides = [
        f"out_dir={out}", "num_threads=1", f"weights={WEIGHTS.resolve()}", "epochs=3",
        f"amp={str(amp).lower()}", f"export_int8={str(amp).lower()}",  # one int8 check is enough
    ]  # fmt: skip
    result = train_category(resolve_config("stfpm", "cpu-smoke", "weave", str(data), overrides))
    assert result.status == "FINISHED", result.error
    assert result.notes[0].startswith("bf16 autocast" if amp else "fp32")
    return result


@pytest.fixture(scope="module")
def amp_on(data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(data, tmp_path_factory.mktemp("amp-on"), amp=True)


@pytest.fixture(scope="module")
def amp_off(data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(data, tmp_path_factory.mktemp("amp-off"), amp=False)


@pytest.mark.parametrize("trained", ["amp_on", "amp_off"])
def test_every_place_shows_the_exported_models_numbers(
    trained: str, data: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run: TrainResult = request.getfixturevalue(trained)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert {k: metrics[k] for k in KEYS} == {k: run.metrics[k] for k in KEYS}
    meta = read_metadata(run.onnx_path)
    assert {k: meta["metrics"][k] for k in KEYS} == {k: run.metrics[k] for k in KEYS}
    _, _, stored = load_model_from_checkpoint(run.checkpoint_path)
    assert stored["thresholds"] == meta["thresholds"] == run.thresholds
    fitted = json.loads((run.run_dir / "thresholds.json").read_text())
    assert {k: fitted[k] for k in run.thresholds} == run.thresholds
    assert fitted["scored_by"] == "model.onnx (onnxruntime)" and meta["thresholds_fitted_on"]["source"] == "validation"
    # The training-precision figures stay, under their own name.
    assert all(f"test_torch/{k.split('/')[1]}" in run.metrics for k in KEYS)

    # adkd evaluate of the file: the same numbers, whatever precision trained it.
    again = evaluate_checkpoint(run.checkpoint_path, str(data), "weave", tmp_path / "eval")
    assert {k: again[k] for k in KEYS} == {k: run.metrics[k] for k in KEYS}
    # Another runtime's kernels (as another host's would) stay within the stated tolerance.
    other = evaluate_checkpoint(run.onnx_path, str(data), "weave", tmp_path / "eval-ov", runtime="openvino")
    for key in KEYS:
        assert other[key] == pytest.approx(run.metrics[key], abs=METRIC_TOLERANCE), key
    ours, theirs = (_csv_scores(tmp_path / name / "scores.csv") for name in ("eval", "eval-ov"))
    np.testing.assert_allclose(theirs, ours, rtol=SCORE_TOLERANCE)

    # adkd.load(...).predict and scores.csv: the same scores and verdicts, image by image.
    with (run.run_dir / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # runtime=auto may pick a faster variant timed at export (an int8 file has its own thresholds): fp32 here.
    preds = adkd.load(run.onnx_path, runtime="onnxruntime").predict([row["path"] for row in rows])
    np.testing.assert_array_equal([float(r["score"]) for r in rows], np.float32([p.score for p in preds]))
    assert [int(r["predicted_label"]) for r in rows] == [int(p.anomalous) for p in preds]

    # adkd predict from the command line: the same verdicts.
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off"}
    proc = run_adkd(["predict", *[r["path"] for r in rows], "--model", str(run.onnx_path), "--runtime", "onnxruntime",
                     "--out", str(tmp_path / "pred")], env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "pred" / "predictions.csv").open() as fh:
        verdicts = {Path(r["image"]).resolve(): r["verdict"] for r in csv.DictReader(fh)}
    assert [verdicts[Path(r["path"]).resolve()] == "anomalous" for r in rows] == [p.anomalous for p in preds]


def _csv_scores(path: Path) -> np.ndarray:
    with path.open() as fh:
        return np.array([float(row["score"]) for row in csv.DictReader(fh)])


def _degraded(fp32: Path, out: Path, layer: int = 4, scale: float = 2.0) -> Path:
    """``fp32`` with the weights of one student convolution off by ``scale`` (a wrong per-layer scale)."""
    model = onnx.load(str(fp32))
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/model/student")]
    weight = inits[convs[layer].input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(scale), weight.name))
    onnx.save(model, str(out))
    return out


def test_the_default_gate_passes_a_good_int8_graph_and_refuses_a_degraded_one(
    amp_on: TrainResult, tmp_path: Path
) -> None:
    run = amp_on
    # The run's own int8 model passed the default gate and carries its own thresholds and metrics.
    assert run.tags["int8"] == "logged", run.tags.get("int8_refused")
    int8_meta = read_metadata(run.int8_path)
    assert int8_meta["int8_gate"]["ok"] and int8_meta["thresholds"] != read_metadata(run.onnx_path)["thresholds"]
    assert int8_meta["metrics"]["test/image_auroc"] == run.metrics["test_int8/image_auroc"]
    gate = int8_meta["int8_gate"]
    assert gate["n_calibration"] == gate["n_normals"] == 4 and gate["n_defects"] >= 3

    # The same quantizer on a graph with one layer's weights twice too large: refused, in one line, no file.
    _, config, _ = load_model_from_checkpoint(run.checkpoint_path)
    full = run_data(config)
    val = full.val.permute(0, 2, 3, 1).contiguous().numpy()
    bad = _degraded(run.onnx_path, tmp_path / "degraded.onnx")
    target = tmp_path / "degraded.int8.onnx"
    with pytest.raises(QuantizationRefused) as refused:
        quantize_onnx(run.onnx_path, val, target, graph=bad, seed=config.seed)
    assert "\n" not in str(refused.value) and "refused on 4 held-out" in str(refused.value)
    assert not target.exists()
    # ... and the good graph, quantized again the same way, passes.
    again, passed = quantize_onnx(run.onnx_path, val, tmp_path / "good.int8.onnx", seed=config.seed)
    assert passed.ok and again.is_file()
