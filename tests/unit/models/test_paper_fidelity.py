"""mrkd / stfpm / stfpm-ae against their papers (issue 12): the checks that would have caught the drift.

The SCSAtt tests run real bottle images through the ImageNet MobileNetV2 teacher when ../shared holds them
(``ADKD_SHARED`` points elsewhere), and a seeded tensor with the teacher features' statistics otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adkd.models.components.blur import GaussianBlur2d
from adkd.models.components.scconv import CRU, SCConv
from adkd.models.components.simam import SimAM
from adkd.models.stfpm.loss import pyramid_loss
from adkd.models.zoo import build_model, count_parameters

SHARED = Path(os.environ.get("ADKD_SHARED", Path(__file__).resolve().parents[3] / ".." / "shared"))
BOTTLE = SHARED / "data" / "mvtec_ad_256" / "bottle" / "train" / "good"
MOBILENET = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
HAVE_REAL = BOTTLE.is_dir() and MOBILENET.is_file()


def _bottle_images(n: int = 4, size: int = 128) -> torch.Tensor:
    from PIL import Image

    from adkd.models.preprocess import normalize

    files = sorted(BOTTLE.glob("*.png"))[:n]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return normalize(x)


def _mrkd(**options: object) -> nn.Module:
    weights = str(MOBILENET) if HAVE_REAL else "none"
    return build_model("mrkd", "mobilenet_v2", weights=weights, **options).eval()


def _attention_io(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs and outputs of SCConv and SimAM in the bottleneck for these images."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for m in model.bottleneck.attention:
        name = type(m).__name__
        hooks.append(m.register_forward_hook(lambda _m, i, o, n=name: seen.update({f"{n}_in": i[0], f"{n}_out": o})))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return seen


def _realistic_input() -> torch.Tensor:
    return _bottle_images() if HAVE_REAL else torch.randn(4, 3, 128, 128)


def _simam_multiplier(x: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """The factor SimAM multiplies each activation by (sigmoid of the inverse energy)."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    return torch.sigmoid(d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + lam)) + 0.5)


def test_scconv_keeps_the_scale_and_simam_is_not_a_constant_in_mrkd() -> None:
    torch.manual_seed(0)
    io = _attention_io(_mrkd(), _realistic_input())
    ratio = float(io["SCConv_out"].std() / io["SCConv_in"].std())
    assert 0.1 < ratio < 10, f"SCConv output std / input std = {ratio:.2e}"
    mult = _simam_multiplier(io["SimAM_in"])
    spread = float(mult.std(dim=(2, 3)).mean())  # per (image, channel): how much the factor varies in space
    assert spread > 0.02, f"SimAM's multiplier barely varies over positions (std {spread:.1e})"
    assert torch.allclose(io["SimAM_out"], io["SimAM_in"] * mult, atol=1e-6)


def test_all_channel_softmax_variant_is_kept_and_shows_the_collapse() -> None:
    # cheng-haha/ScConv's fuse: every weight ≈ 1/(2C), the scale collapses and SimAM turns into ×sigmoid(0.5).
    torch.manual_seed(0)
    io = _attention_io(_mrkd(scconv_fusion="softmax_all_channels"), _realistic_input())
    ratio = float(io["SCConv_out"].std() / io["SCConv_in"].std())
    assert ratio < 0.01
    mult = _simam_multiplier(io["SimAM_in"])
    assert float(mult.std(dim=(2, 3)).mean()) < 0.01
    assert float(mult.mean()) == pytest.approx(float(torch.sigmoid(torch.tensor(0.5))), abs=0.02)


def test_cru_fuses_the_two_branches_per_channel_with_weights_summing_to_one() -> None:
    torch.manual_seed(0)
    cru = CRU(16).eval()
    x = torch.randn(2, 16, 8, 8)
    up, low = cru.squeeze1(x[:, :8]), cru.squeeze2(x[:, 8:])
    y1 = cru.gwc(up) + cru.pwc1(up)
    y2 = torch.cat([cru.pwc2(low), low], dim=1)
    s = torch.stack([y1.mean(dim=(2, 3)), y2.mean(dim=(2, 3))])  # [2, B, C]
    beta = torch.softmax(s, dim=0)[..., None, None]  # β1 + β2 = 1 for every channel
    assert torch.allclose(cru(x), beta[0] * y1 + beta[1] * y2, atol=1e-5)
    assert SCConv(16).cru.fusion == "per_channel"
    with pytest.raises(ValueError, match="fusion"):
        CRU(16, fusion="average")


def test_fusion_block_has_a_switchable_1x1_stage_before_scsatt() -> None:
    on = build_model("mrkd", "mobilenet_v2", weights="none")
    off = build_model("mrkd", "mobilenet_v2", weights="none", fusion_conv=False)
    conv, bn, relu = on.bottleneck.fusion
    c = on.bottleneck.fused_channels  # 3 · 96
    assert c == 288 and isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.in_channels == c
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert off.bottleneck.fusion is None
    assert count_parameters(on)[0] - count_parameters(off)[0] == c * c + 2 * c
    # The attention sees the fusion stage's output (non-negative after its ReLU).
    io = _attention_io(on.eval(), torch.randn(2, 3, 64, 64))
    assert float(io["SCConv_in"].min()) >= 0


def test_each_ablation_switch_changes_the_model_as_its_table_expects() -> None:
    def trainable(**options: object) -> int:
        return count_parameters(build_model("mrkd", "mobilenet_v2", weights="none", **options))[0]

    full = trainable()
    # Table 5: FMM adds a conv3×3-ReLU-conv3×3 generator per used level (24, 32, 96 channels).
    assert full - trainable(use_fmm=False) == sum(2 * (c * c * 9 + c) for c in (24, 32, 96))
    # Table 6: SimAM has no parameters but is in the graph; SCConv adds its own.
    no_simam = build_model("mrkd", "mobilenet_v2", weights="none", use_simam=False)
    assert count_parameters(no_simam)[0] == full
    assert not any(isinstance(m, SimAM) for m in no_simam.modules())
    assert any(isinstance(m, SimAM) for m in build_model("mrkd", "mobilenet_v2", weights="none").modules())
    assert full - trainable(use_scconv=False) == sum(p.numel() for p in SCConv(288).parameters())
    # Table 7: the levels enter the fusion block (and the loss): fewer levels, narrower fused map.
    for levels, fused in (((1, 2, 3), 288), ((2, 3), 192), ((3,), 96), ((1,), 96)):
        model = build_model("mrkd", "mobilenet_v2", weights="none", levels=levels)
        assert model.bottleneck.fused_channels == fused and len(model.bottleneck.fuse) == len(levels)
        model.train()
        out = model(torch.randn(2, 3, 64, 64))
        assert len(out["teacher"]) == len(out["generated"]) == len(levels)
    # Table 4: the backbone sets the teacher's widths.
    assert build_model("mrkd", "resnet18", weights="none").bottleneck.fused_channels == 3 * 256


def test_mrkd_paper_loss_is_per_position_cosine_on_generated_features_summed_over_levels() -> None:
    model = build_model("mrkd", "mobilenet_v2", weights="none", loss="paper")
    torch.manual_seed(0)
    t = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 2)]
    s = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 2)]
    g = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 2)]
    expected = sum(float((1 - torch.cosine_similarity(a, b, dim=1)).mean()) for a, b in zip(t, g))
    loss = model.loss({"teacher": t, "student": s, "generated": g})
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    two = build_model("mrkd", "mobilenet_v2", weights="none", loss="two_term", loss_mode="pixel", alpha=0.5)
    s_term = sum(float((1 - torch.cosine_similarity(a, b, dim=1)).mean()) for a, b in zip(t, s))
    assert float(two.loss({"teacher": t, "student": s, "generated": g})) == pytest.approx(
        s_term + 0.5 * expected, rel=1e-5
    )


def test_sigma_zero_gives_finite_unsmoothed_maps() -> None:
    blur = GaussianBlur2d(0.0)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(blur(x), x)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur2d(-1.0)
    for name in ("stfpm", "mrkd"):
        sharp = build_model(name, "mobilenet_v2", weights="none", sigma=0.0).eval()
        with torch.no_grad():
            amap, score = sharp(torch.randn(2, 3, 64, 64))
        assert torch.isfinite(amap).all() and torch.isfinite(score).all()
        assert torch.equal(score, amap.amax(dim=(1, 2, 3)))
        smooth = build_model(name, "mobilenet_v2", weights="none", sigma=4.0).eval()
        smooth.load_state_dict(sharp.state_dict())
        with torch.no_grad():
            blurred, _ = smooth(torch.randn(2, 3, 64, 64))
        # A blurred map is smoother: its neighbouring pixels differ less.
        assert (blurred.diff(dim=-1).abs().mean() / blurred.abs().mean()) < (
            amap.diff(dim=-1).abs().mean() / amap.abs().mean()
        )


def test_stfpm_paper_loss_equals_the_official_formula_on_a_hand_computed_case() -> None:
    # One level, B=1, C=2, 1×2 positions. Teacher (3,4),(1,0); student (4,3),(0,1) at the two positions.
    t = [torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])]
    s = [torch.tensor([[[[4.0, 0.0]], [[3.0, 1.0]]]])]
    # Normalised: t̂ = (.6,.8),(1,0); ŝ = (.8,.6),(0,1). Σ_c (t̂−ŝ)² = 0.08 and 2; mean over b,h,w = 1.04.
    assert float(pyramid_loss(t, s, scale=1.0)) == pytest.approx(1.04, rel=1e-6)
    model = build_model("stfpm", "mobilenet_v2", weights="none", loss_scale=1.0)
    assert float(model.loss({"teacher": t, "student": s})) == pytest.approx(1.04, rel=1e-6)
    assert float(build_model("stfpm", "mobilenet_v2", weights="none").loss({"teacher": t, "student": s})) == (
        pytest.approx(0.52, rel=1e-6)
    )


def test_stfpm_ae_has_three_unet_stages_where_the_map_allows_and_logs_fewer_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="adkd.models.stfpm_ae.torch_model"):
        full = build_model("stfpm-ae", "resnet18", weights="none", image_size=256)
    assert full.ae_stages == (3, 3, 3) and not caplog.records
    with caplog.at_level("INFO", logger="adkd.models.stfpm_ae.torch_model"):
        small = build_model("stfpm-ae", "resnet18", weights="none", image_size=64)
    assert small.ae_stages == (3, 2, 1)
    assert len(caplog.records) == 1 and "16/8/4" in caplog.records[0].getMessage()
