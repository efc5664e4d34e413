"""Blur, SimAM, SCConv, FMM and preprocessing against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from adkd.models.components import (
    SRU,
    FeatureMaskGeneration,
    GaussianBlur2d,
    RandomFeatureMask,
    SCConv,
    SimAM,
)
from adkd.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, normalize


def test_blur_is_scipy_gaussian_sigma4_33_taps() -> None:
    blur = GaussianBlur2d(sigma=4.0)
    assert blur.taps == 33
    x = torch.rand(2, 1, 48, 40)
    ours = blur(x).numpy()
    # torch's "reflect" pad (d c b | a b c d) is scipy's "mirror"; truncate=4 gives radius 16.
    ref = np.stack([gaussian_filter(m[0].numpy(), sigma=4.0, mode="mirror", truncate=4.0) for m in x])
    np.testing.assert_allclose(ours[:, 0], ref, atol=1e-5)


def test_blur_keeps_constant_maps_and_spreads_a_peak() -> None:
    blur = GaussianBlur2d(4.0)
    const = torch.full((1, 1, 40, 40), 3.0)
    torch.testing.assert_close(blur(const), const)
    peak = torch.zeros(1, 1, 64, 64)
    peak[0, 0, 32, 32] = 1.0
    out = blur(peak)
    # The centre keeps 1/(2πσ²) ≈ 0.00995 of the mass of a unit impulse (discrete kernel: 0.00995).
    assert out[0, 0, 32, 32].item() == pytest.approx(1 / (2 * np.pi * 16), rel=0.01)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_simam_equals_closed_form() -> None:
    x = torch.randn(2, 3, 5, 7)
    out = SimAM(lam=1e-4)(x)
    xn = x.double().numpy()
    expected = np.empty_like(xn)
    for b in range(2):
        for c in range(3):
            v = xn[b, c]
            n = v.size - 1
            d = (v - v.mean()) ** 2
            e_inv = d / (4 * (d.sum() / n + 1e-4)) + 0.5
            expected[b, c] = v / (1 + np.exp(-e_inv))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in SimAM().parameters()) == 0


@pytest.mark.parametrize("channels", [64, 288, 768])
def test_scconv_keeps_shape(channels: int) -> None:
    x = torch.randn(2, channels, 6, 5)
    assert SCConv(channels)(x).shape == x.shape


def test_scconv_rejects_channels_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SCConv(6)


def test_sru_gate_is_the_half_threshold_on_gn_weighted_sigmoid() -> None:
    sru = SRU(16, group_num=4)
    with torch.no_grad():
        sru.gn.weight.copy_(torch.rand(16) + 0.5)
        sru.gn.bias.copy_(torch.randn(16))
    x = torch.randn(2, 16, 5, 5) * 3
    w1, w2 = sru.gate(x)
    gamma = sru.gn.weight.detach()
    gn = F.group_norm(x, 4, gamma, sru.gn.bias.detach(), eps=sru.gn.eps)
    r = torch.sigmoid(gn * (gamma / gamma.sum()).view(1, -1, 1, 1))
    above = r > 0.5
    assert 0.2 < above.float().mean() < 0.8  # both branches are exercised
    torch.testing.assert_close(w1[above], torch.ones_like(r[above]))
    torch.testing.assert_close(w2[above], torch.zeros_like(r[above]))
    torch.testing.assert_close(w1[~above], r[~above])
    torch.testing.assert_close(w2[~above], r[~above])
    # Cross reconstruction: [x11 + x22, x12 + x21] with x1 = w1·x, x2 = w2·x.
    x1, x2 = w1 * x, w2 * x
    expected = torch.cat([x1[:, :8] + x2[:, 8:], x1[:, 8:] + x2[:, :8]], dim=1)
    torch.testing.assert_close(sru(x), expected)


def test_feature_mask_drops_about_rate_of_positions_in_training_only() -> None:
    mask = RandomFeatureMask(0.3).train()
    x = torch.rand(8, 16, 32, 32) + 0.1  # strictly positive, so a zero means "masked"
    out = mask(x)
    dropped = out == 0
    # The mask is shared across channels: a position is zeroed in every channel or in none.
    per_position = dropped.all(dim=1)
    assert torch.equal(per_position, dropped.any(dim=1))
    assert per_position.float().mean().item() == pytest.approx(0.3, abs=0.02)
    kept = ~per_position.unsqueeze(1).expand_as(x)
    torch.testing.assert_close(out[kept], x[kept])
    assert not torch.equal(mask(x), out)  # redrawn every forward
    mask.eval()
    assert torch.equal(mask(x), x)


def test_fmm_in_eval_is_the_generator_alone() -> None:
    fmm = FeatureMaskGeneration(8, rate=0.5).eval()
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(fmm(x), fmm.generator(x))
    with pytest.raises(ValueError, match="mask_rate"):
        RandomFeatureMask(1.0)


def test_normalize_uint8_and_float_agree() -> None:
    img = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(normalize(img), normalize(img.float() / 255))
    mean_img = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).expand(1, 3, 4, 4)
    torch.testing.assert_close(normalize(mean_img), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        normalize(torch.zeros(3, 8, 8))


def test_preprocess_resizes_and_normalises_nhwc_uint8() -> None:
    pre = Preprocess(64, channels_last=True)
    value = torch.tensor([200, 100, 50], dtype=torch.uint8)
    img = value.view(1, 1, 1, 3).expand(2, 30, 50, 3).contiguous()
    out = pre(img)
    assert out.shape == (2, 3, 64, 64)
    expected = (value.float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 10, 20], expected)
    nchw = Preprocess(32, channels_last=False)(img.permute(0, 3, 1, 2))
    assert nchw.shape == (2, 3, 32, 32)
