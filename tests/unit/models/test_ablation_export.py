"""Every ablation combination of mrkd (Tables 4-7 of the masked-RD paper) builds and exports to ONNX."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from adkd.models.zoo import build_model
from adkd.pipelines.export.onnx_export import export_onnx

SWITCHES = list(itertools.product((False, True), repeat=3))  # use_fmm, use_simam, use_scconv
LEVELS = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
THRESHOLDS = {"image": 0.5, "pixel": 0.5, "score_min": 0.0, "score_max": 1.0}
CASES = [("mobilenet_v2", s, (1, 2, 3)) for s in SWITCHES] + [("mobilenet_v2", (True,) * 3, lv) for lv in LEVELS[:-1]]
CASES += [("resnet18", (True,) * 3, (1, 2, 3))]


@pytest.mark.parametrize(("backbone", "switches", "levels"), CASES)
def test_ablation_combination_exports_and_matches_onnxruntime(
    tmp_path: Path, backbone: str, switches: tuple[bool, bool, bool], levels: tuple[int, ...]
) -> None:
    use_fmm, use_simam, use_scconv = switches
    model = build_model(
        "mrkd", backbone, weights="none", use_fmm=use_fmm, use_simam=use_simam, use_scconv=use_scconv, levels=levels
    ).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 64, THRESHOLDS)  # verifies against onnxruntime or raises
    assert path.is_file() and path.stat().st_size > 0


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2"])
def test_every_backbone_builds_with_every_switch_off_and_on(backbone: str) -> None:
    for on in (False, True):
        model = build_model(
            "mrkd", backbone, weights="none", use_fmm=on, use_simam=on, use_scconv=on, fusion_conv=on
        ).eval()
        with torch.no_grad():
            amap, score = model(torch.randn(1, 3, 64, 64))
        assert amap.shape == (1, 1, 64, 64) and torch.isfinite(score).all()
