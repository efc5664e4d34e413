"""When a run measures its fp32 file in OpenVINO f32/bf16 (the measuring itself: tests/unit/export/
test_openvino_runtime.py and the training run in tests/integration/test_onnx_export_cli.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adkd.pipelines.predict import openvino_predictor
from adkd.pipelines.train.presets import resolve_config
from adkd.pipelines.train.runtime_variants import float_variants_for_run


def _held_out(n: int) -> SimpleNamespace:
    """The part of a category these checks read: its validation images (never scored: no model file exists)."""
    return SimpleNamespace(val=torch.zeros(n, 3, 64, 64, dtype=torch.uint8), test=torch.zeros(0))


def test_too_few_validation_images_leave_them_out_with_a_note(tmp_path: Path) -> None:
    config = resolve_config("stfpm", "cpu-smoke", "cat", str(tmp_path), ["float_runtimes=[openvino]"])
    out = float_variants_for_run(tmp_path / "model.onnx", _held_out(7), config)
    assert out.notes == [
        "openvino not measured: the gate needs 8 validation images, the run holds 7 out; runtime=auto keeps to "
        "ONNX Runtime and the int8 files"
    ]
    assert (out.metrics, out.tags, out.gates) == ({}, {}, {})
    assert not (tmp_path / "model.onnx").exists()


def test_bf16_is_left_out_where_the_cpu_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_predictor, "cpu_has_bf16", lambda: False)  # the probe of an avx2-only CPU
    config = resolve_config("stfpm", "cpu-smoke", "cat", str(tmp_path), ["float_runtimes=[openvino-bf16]"])
    out = float_variants_for_run(tmp_path / "model.onnx", _held_out(20), config)
    assert out.notes == ["openvino-bf16 not measured: this CPU has no bf16 (AVX512-BF16/AMX)"] and not out.metrics
    none = resolve_config("stfpm", "cpu-smoke", "cat", str(tmp_path), ["float_runtimes=[]"])
    assert float_variants_for_run(tmp_path / "model.onnx", _held_out(3), none).notes == []


def test_a_variant_openvino_cannot_run_is_a_note_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adkd.models.zoo import build_model
    from adkd.pipelines.export import export_onnx, read_metadata

    torch.manual_seed(0)
    model = build_model("stfpm", backbone="resnet18", weights="none").eval()
    thresholds = {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6}
    fp32 = export_onnx(model, tmp_path / "model.onnx", 64, thresholds, {"model": "stfpm"})
    config = resolve_config("stfpm", "cpu-smoke", "cat", str(tmp_path), ["image_size=64", "float_runtimes=[openvino]"])
    val = torch.randint(0, 256, (10, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    full = SimpleNamespace(val=val, val_paths=[None] * 10, test=torch.zeros(0))

    def compile_fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exception from src/plugins/intel_cpu/src/node.cpp:\nunsupported layer")

    monkeypatch.setattr(openvino_predictor.OpenVinoPredictor, "__init__", compile_fails)  # what the CPU plugin raises
    out = float_variants_for_run(fp32, full, config)
    reason = (
        "openvino of model.onnx could not be measured (Exception from src/plugins/intel_cpu/src/node.cpp:); "
        "runtime=auto will not run it"
    )
    assert out.notes == [reason] and out.tags == {"openvino_f32": "failed", "openvino_f32_refused": reason}
    assert "variant_records" not in read_metadata(fp32) and out.gates == {}
