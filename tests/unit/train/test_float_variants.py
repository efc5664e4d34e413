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
