"""`adkd export --checkpoint`: a trained checkpoint becomes an ONNX file that scores like the training run."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from adkd.errors import AdkdError
from adkd.pipelines.data.dataset import load_category
from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.export import read_metadata
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config
from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def adkd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off"}
    return run_adkd(args, env=env, cwd=cwd, timeout=600)


def test_export_checkpoint_scores_like_training(tmp_path: Path) -> None:
    data = tmp_path / "exportset"
    synthesize(data, categories=["bolt"], size=64, n_train=40, n_test=8, seed=0)  # 8 validation images: int8
    config = resolve_config(
        "stfpm", "cpu-smoke", category="bolt", data=str(data),
        overrides=["epochs=1", "num_threads=1", f"out_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    result = train_category(config)
    assert result.status == "FINISHED", result.error
    out = tmp_path / "bolt.onnx"
    proc = adkd("export", "--checkpoint", str(result.checkpoint_path), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # rich wraps the lines at the terminal's width, between words or inside a long path
    assert f"wrote {out}" in proc.stdout.replace("\n", "") and "max map diff" in " ".join(proc.stdout.split())
    assert "(opset 17, input uint8 [batch, 64, 64, 3])" in " ".join(proc.stdout.split())  # not eaten as markup

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

    # --int8 with a named scheme: the int8 file carries it, or the gate refuses with its reasons (exit 2).
    args = ["export", "--checkpoint", str(result.checkpoint_path), "--out", str(out), "--int8"]
    proc = adkd(*args, "--int8-scheme", "qop-u8s8", cwd=tmp_path)
    int8_file = tmp_path / "bolt.int8.onnx"
    if proc.returncode == 0:
        assert "(int8 qop-u8s8; calibrated on 4, gated on 4 held-out" in " ".join(proc.stdout.split())
        assert read_metadata(int8_file)["int8_scheme"] == "qop-u8s8"
    else:
        assert proc.returncode == 2 and "refused" in proc.stderr and not int8_file.exists(), proc.stderr


def test_export_of_a_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    proc = adkd("export", "--checkpoint", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.pt does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--int8", "--int8-scheme", "qdq-u4"], "int8 scheme 'qdq-u4' is not one of qdq-s8s8, qdq-u8s8, qop-u8s8"),
        (["--int8-scheme", "qop-u8s8"], "--int8-scheme chooses the int8 model's layout: add --int8"),
        (["--int8", "--int8-runtime", "tensorrt"], "--int8-runtime 'tensorrt' is not onnxruntime or openvino"),
    ],
)
def test_a_bad_int8_scheme_fails_before_any_file_is_written(tmp_path: Path, flags: list[str], message: str) -> None:
    # The checkpoint need not exist: the flags are checked first.
    proc = adkd("export", "--checkpoint", str(tmp_path / "model.pt"), *flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


class ArtifactKinds(NullCallback):
    def __init__(self) -> None:
        self.artifacts: list[tuple[Path, str]] = []

    def on_artifact(self, path: Path, kind: str) -> None:
        self.artifacts.append((Path(path), kind))


def test_finished_run_carries_onnx_int8_and_fingerprint(tmp_path: Path) -> None:
    data = tmp_path / "trainset"
    synthesize(data, categories=["bolt"], size=64, n_train=40, n_test=6, seed=0)  # 8 validation images: int8
    config = resolve_config(
        "stfpm", "cpu-smoke", category="bolt", data=str(data),
        overrides=["epochs=1", "weights=none", "num_threads=1", "export_int8=true", f"out_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    seen = ArtifactKinds()
    result = train_category(config, [seen])
    assert result.status == "FINISHED", result.error
    assert result.onnx_path == result.run_dir / "model.onnx" and result.onnx_path.is_file()
    kinds = {kind: path for path, kind in seen.artifacts}
    assert kinds["onnx"] == result.onnx_path
    assert len(result.data_fingerprint) == 64 and int(result.data_fingerprint, 16) >= 0  # a SHA-256 of the files
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(data, same)
    shutil.copytree(data, other)
    (other / "bolt" / "train" / "good" / "extra.txt").write_text("one more file")
    assert data_fingerprint(same, "bolt") == result.data_fingerprint != data_fingerprint(other, "bolt")
    # The int8 gate either passes (a file, its metrics) or refuses (a reason); both are the run's outcome.
    if result.tags["int8"] == "logged":
        assert result.int8_path is not None and result.int8_path.is_file()
        assert kinds["onnx_int8"] == result.int8_path and "int8/score_correlation" in result.metrics
    else:
        assert result.tags["int8"] == "refused" and result.tags["int8_refused"] in result.notes  # said, not only tagged
        assert result.int8_path is None and "onnx_int8" not in kinds
    # OpenVINO's int8 beside it, under the same gate, and runtime=auto's choice timed on this machine.
    ov_int8 = result.run_dir / "model.ov.int8.onnx"
    if result.tags["int8_openvino"] == "logged":
        assert kinds["onnx_int8_openvino"] == ov_int8 and read_metadata(ov_int8)["runtime"] == "openvino"
        assert "int8_openvino/score_correlation" in result.metrics
    else:
        # The branch this seeded run takes: the refusal is in the run's notes, not only in a tag MLflow may not get.
        assert result.tags["int8_openvino_refused"] in result.notes and not ov_int8.exists()
    fp32_meta = read_metadata(result.onnx_path)
    choice = fp32_meta["runtime_choice"]
    # auto times only what was measured on itself: ONNX Runtime fp32, the int8 files that passed their gate, and
    # the fp32 file in OpenVINO f32, measured on its own (thresholds, gate, test metrics) in the same run.
    timed = set(choice["timings_ms_per_image"])
    assert "onnxruntime" in timed
    assert ("openvino-int8" in timed) == (result.tags["int8_openvino"] == "logged")
    record = fp32_meta["variant_records"]["openvino"]
    assert set(record["metrics"]) == {f"test/{k}" for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    assert result.metrics["test_openvino_f32/image_auroc"] == record["metrics"]["test/image_auroc"]
    assert result.metrics["openvino_f32/score_correlation"] == record["gate"]["score_correlation"] > 0.999
    assert result.tags["openvino_f32"] == ("measured" if record["gate"]["ok"] else "refused")
    assert choice["candidates"]["openvino"] == {"gate_ok": record["gate"]["ok"], "own_metrics": True}
    assert ("openvino" in timed) == record["gate"]["ok"]
    assert not any(k.startswith(("openvino_f32/", "test_openvino_f32/")) for k in fp32_meta["metrics"])
    # Where the export's time went, step by step.
    steps = ("export", "int8", "int8_openvino", "float_variants", "runtime_choice")
    assert all(result.metrics[f"time/{step}_s"] > 0 for step in steps)
    note = next(n for n in result.notes if n.startswith("export steps: "))
    assert note.startswith("export steps: model.onnx ") and note.endswith(" s") and "OpenVINO f32/bf16 " in note
    assert result.metrics["runtime/onnxruntime_b1_ms"] == choice["timings_ms_per_image"]["onnxruntime"]["b1_ms"]
    assert any(note.startswith(f"runtime=auto runs {choice['variant']} ") for note in result.notes)


def test_a_failed_export_fails_the_run_and_keeps_model_pt(tmp_path: Path) -> None:
    data = tmp_path / "trainset"
    synthesize(data, categories=["bolt"], size=64, n_train=10, n_test=6, seed=0)
    config = resolve_config(
        "stfpm", "cpu-smoke", category="bolt", data=str(data),
        overrides=["epochs=1", "weights=none", "num_threads=1", f"out_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "stfpm" / "bolt"
    (run_dir / "model.onnx").mkdir(parents=True)  # a folder where the file must go: the export cannot write it
    ended: list[TrainResult] = []

    class Ends(NullCallback):
        def on_end(self, result: TrainResult) -> None:
            ended.append(result)

    with pytest.raises(AdkdError, match=r"ONNX export of .*model\.pt failed"):
        train_category(config, [Ends()])
    assert [r.status for r in ended] == ["FAILED"] and ended[0].onnx_path is None
    assert (run_dir / "model.pt").is_file()
