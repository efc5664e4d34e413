"""The four models: shapes, what trains, losses, parameter counts, options and the registry."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adkd.errors import ConfigError
from adkd.models import MODEL_ZOO, build_model, count_parameters
from adkd.models.backbones import BACKBONES
from adkd.models.base import AnomalyModel
from adkd.models.checks import check_model_settings
from adkd.models.mrkd import mrkd
from adkd.models.rd import rd
from adkd.models.rd.loss import cosine_loss
from adkd.models.stfpm import stfpm
from adkd.models.stfpm.loss import pyramid_loss
from adkd.models.stfpm_ae import AutoencoderSchedule, AutoencoderTraining, autoencoder_training, stfpm_ae
from adkd.models.stfpm_ae.loss import reconstruction_loss

MODELS = ("rd", "mrkd", "stfpm", "stfpm-ae")
CHANNELS = {
    "resnet18": (64, 128, 256),
    "resnet50": (256, 512, 1024),
    "wide_resnet50_2": (256, 512, 1024),
    "mobilenet_v2": (24, 32, 96),
}


def _build(name: str, backbone: str) -> AnomalyModel:
    options = {"image_size": 64} if name == "stfpm-ae" else {}
    return build_model(name, backbone, weights="none", **options).eval()


@functools.cache
def _eval_model(name: str, backbone: str) -> AnomalyModel:
    """A random-teacher model shared by the read-only tests (kept alive, so only for reused ones)."""
    return _build(name, backbone)


_SHARED = {("rd", "wide_resnet50_2"), ("stfpm", "resnet18"), ("mrkd", "mobilenet_v2")}
_SHARED |= {(name, "resnet18") for name in MODELS}


def _train_step(model: AnomalyModel, images: torch.Tensor) -> torch.Tensor:
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    opt.zero_grad()
    loss = model.loss(model(images))
    loss.backward()
    opt.step()
    return loss


def test_registry_lists_the_four_models_with_defaults() -> None:
    assert tuple(MODEL_ZOO) == MODELS
    assert {n: s.default_backbone for n, s in MODEL_ZOO.items()} == {
        "rd": "wide_resnet50_2",
        "mrkd": "wide_resnet50_2",
        "stfpm": "resnet18",
        "stfpm-ae": "resnet18",
    }
    for spec in MODEL_ZOO.values():
        assert spec.backbones == BACKBONES
        assert spec.description


def test_the_builders_defaults_are_the_zoos_and_build_the_paper_models() -> None:
    # One place: MODEL_ZOO reads each builder's keyword defaults; build_model adds none of its own.
    assert MODEL_ZOO["mrkd"].builder is mrkd and MODEL_ZOO["stfpm-ae"].builder is stfpm_ae
    assert MODEL_ZOO["mrkd"].defaults["fusion_conv"] is True and MODEL_ZOO["mrkd"].defaults["loss"] == "paper"
    direct, zoo = mrkd("mobilenet_v2", "none"), build_model("mrkd", "mobilenet_v2", "none")
    assert direct.state_dict().keys() == zoo.state_dict().keys() and zoo.loss_kind == direct.loss_kind == "paper"
    assert rd("mobilenet_v2", "none").model_name == "rd" and stfpm("mobilenet_v2", "none").model_name == "stfpm"


# Run in a fresh interpreter: what a Ray driver does before any worker starts, for every model and preset.
_LIGHT_DRIVER = """
import sys
from adkd.errors import ConfigError
from adkd.models import MODEL_ZOO
from adkd.pipelines.train.presets import PRESETS, resolve_config
from adkd.platform.cluster import driver, resources
for preset, models in PRESETS.items():
    for model in models:
        config = resolve_config(model, preset, category="c", data=sys.argv[1])
        assert resources.memory_request(config) == {}
from adkd.platform.runs import RayPlan
from adkd.platform.tracking.run_context import RESOLVED_DEVICE, device_tag, environment_tags
from adkd.pipelines.export import INPUT_NAME, read_metadata  # what registering a worker's model.onnx reads
print("gpus:", resources.resources_for(RayPlan()).gpus, "torch tag:", environment_tags()["torch_version"])
print("device tag:", device_tag({"device": "auto", RESOLVED_DEVICE: "cuda (as the worker saw it)"}))
try:
    resolve_config("mrkd", "paper", category="c", data=sys.argv[1], overrides=["model_options.mask_rate=1.5"])
except ConfigError as exc:
    print(exc)
heavy = sorted(m for m in ("torch", "torchvision", "sklearn", "matplotlib") if m in sys.modules)
print("heavy:", heavy, "presets:", len(PRESETS))
"""


def test_a_driver_resolves_and_checks_every_runs_settings_without_importing_torch(tmp_path: Path) -> None:
    # 4-5 CPU-s per driver process (`adkd train --categories`, tune, benchmark, demo) that it never needed.
    proc = subprocess.run(
        [sys.executable, "-c", _LIGHT_DRIVER, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model_options.mask_rate=1.5: the mask rate λ must be in [0, 1)" in proc.stdout
    assert "heavy: [] presets:" in proc.stdout, proc.stdout
    # What the run asks of Ray and the tags of its MLflow runs, still without torch: the GPU count Ray's own, the
    # version torch's, build suffix included.
    assert f"gpus: {float(torch.cuda.is_available())} torch tag: {torch.__version__}" in proc.stdout, proc.stdout
    # The device tag of a Ray run is the one its worker resolved (sent with its start event), not the driver's.
    assert "device tag: cuda (as the worker saw it)" in proc.stdout, proc.stdout


def test_autoencoder_hooks_belong_to_stfpm_ae_alone() -> None:
    ae = build_model("stfpm-ae", "mobilenet_v2", "none", image_size=64, ae_pretrain_epochs=2, ae_lr=0.04)
    assert isinstance(ae, AutoencoderTraining) and autoencoder_training(ae) is ae
    assert ae.ae_schedule == AutoencoderSchedule(pretrain_epochs=2, pretrain_lr=1e-3, lr=0.04, freeze_epochs=0)
    for name in ("rd", "mrkd", "stfpm"):
        other = _eval_model(name, "resnet18")
        assert autoencoder_training(other) is None and not hasattr(other, "pretrain_loss")
    assert not any(hasattr(AnomalyModel, hook) for hook in ("pretrain_loss", "freeze_autoencoder", "has_autoencoder"))
    with pytest.raises(ConfigError, match="ae_freeze_epochs=-1"):
        build_model("stfpm-ae", "mobilenet_v2", "none", image_size=64, ae_freeze_epochs=-1)
    with pytest.raises(ConfigError, match="no option ae_lr"):
        build_model("stfpm", "mobilenet_v2", "none", ae_lr=0.1)
    # ... and the checks a run makes before loading any data say the same.
    with pytest.raises(ConfigError, match=r"model_options\.ae_pretrain_epochs=1\.5: it must be a whole number"):
        check_model_settings(64, {"ae_pretrain_epochs": 1.5})
    with pytest.raises(ConfigError, match=r"model_options\.ae_lr=0\.0: a learning rate must be > 0"):
        check_model_settings(64, {"ae_lr": 0.0})


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", MODELS)
def test_shapes_at_64px(name: str, backbone: str) -> None:
    model = _eval_model(name, backbone) if (name, backbone) in _SHARED else _build(name, backbone)
    assert model.model_name == name
    b = 1 if CHANNELS[backbone][0] == 256 else 2  # the ResNet-50 family is slow on CPU
    x = torch.randn(b, 3, 64, 64)
    with torch.no_grad():
        amap, score = model(x)
        model.train()
        out = model(x)
        model.eval()
    assert amap.shape == (b, 1, 64, 64)
    assert score.shape == (b,)
    torch.testing.assert_close(score, amap.amax(dim=(1, 2, 3)))
    assert torch.isfinite(amap).all()
    expected = [(b, c, 64 // s, 64 // s) for c, s in zip(CHANNELS[backbone], (4, 8, 16))]
    assert [tuple(f.shape) for f in out["teacher"]] == expected
    assert [tuple(f.shape) for f in out["student"]] == expected


@pytest.mark.parametrize(("name", "backbone"), [("rd", "wide_resnet50_2"), ("stfpm", "resnet18")])
def test_shapes_at_256px(name: str, backbone: str) -> None:
    model = _eval_model(name, backbone)
    with torch.no_grad():
        amap, score = model(torch.randn(1, 3, 256, 256))
        model.train()
        out = model(torch.randn(1, 3, 256, 256))
        model.eval()
    assert amap.shape == (1, 1, 256, 256)
    assert score.shape == (1,)
    c1, c2, c3 = CHANNELS[backbone]
    assert [tuple(f.shape) for f in out["student"]] == [(1, c1, 64, 64), (1, c2, 32, 32), (1, c3, 16, 16)]


def test_rd_wide_resnet50_2_parameter_counts_match_rd4ad() -> None:
    model = _eval_model("rd", "wide_resnet50_2")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Teacher = torchvision WRN-50-2 conv1+bn1 (9,408 + 128) and layers 1-3:
    #   layer1 634,368 + layer2 3,482,624 + layer3 20,736,000 → 24,862,528, all frozen.
    assert count(model.teacher) == 24_862_528
    assert count(model.teacher.layer3) == 20_736_000
    # MFF: conv3×3 s2 256→512 (1,179,648) + BN 1,024; 512→1024 (4,718,592) + BN 2,048;
    #      level-2 conv3×3 s2 512→1024 (4,718,592) + BN 2,048 → 10,621,952.
    assert count(model.bottleneck.fuse) == 10_621_952
    # OCE (RD4AD width_per_group=128, inner width 1024), input 3×1024 = 3072 channels:
    #   block 1: 1×1 3072→1024 3,145,728 + 3×3 s2 1024→1024 9,437,184 + 1×1 1024→2048 2,097,152
    #            + downsample 1×1 3072→2048 6,291,456 + BNs 2,048+2,048+4,096+4,096 → 20,983,808
    #   blocks 2-3: 2,097,152 + 9,437,184 + 2,097,152 + BNs 8,192 → 13,639,680 each
    #   → 48,263,168; OCBE 58,885,120 (no dead conv4/bn4, which would add 8,392,704).
    assert count(model.bottleneck.oce) == 48_263_168
    assert count(model.bottleneck) == 58_885_120
    # de_wide_resnet50_2 (DeBottleneck, [3, 4, 6], width_per_group=128):
    #   layer1 17,840,128 (2048→1024 @16), layer2 5,317,632 (→512 @32), layer3 1,759,744 (→256 @64).
    assert [count(model.decoder.layer1), count(model.decoder.layer2), count(model.decoder.layer3)] == [
        17_840_128,
        5_317_632,
        1_759_744,
    ]
    assert count(model.decoder) == 24_917_504
    assert count_parameters(model) == (58_885_120 + 24_917_504, 24_862_528)
    assert len(model.bottleneck.oce) == 3
    assert isinstance(model.decoder.layer1[0].conv2, torch.nn.ConvTranspose2d)
    assert model.decoder.layer1[0].conv2.kernel_size == (2, 2)


def test_mrkd_switches_add_exactly_their_modules() -> None:
    rd = count_parameters(build_model("rd", "resnet18", weights="none"))[0]
    bare = build_model(
        "mrkd", "resnet18", weights="none", use_fmm=False, use_scconv=False, use_simam=False, fusion_conv=False
    )
    assert count_parameters(bare)[0] == rd
    full = build_model("mrkd", "resnet18", weights="none")
    # FMM generators (two conv3×3 with bias) on 64/128/256 channels:
    #   2·(64·64·9 + 64) + 2·(128·128·9 + 128) + 2·(256·256·9 + 256) = 1,549,184
    # SCConv on the 3·256 = 768-channel fused map: GroupNorm 1,536; CRU squeezes 2·73,728,
    #   GWC (groups 2) 663,552 + bias 768, PWC1 147,456, PWC2 110,592 → 1,071,360. SimAM adds none.
    # §3.3 fusion: 1×1 conv 768·768 + BN 2·768 = 591,360.
    assert count_parameters(full)[0] - rd == 1_549_184 + 1_071_360 + 591_360
    # Table 7: level 3 alone enters the fusion block and the loss; against rd on the same level, FMM adds
    # one generator on 256 channels: 2·(256·256·9 + 256) = 1,180,160.
    rd3 = count_parameters(build_model("rd", "resnet18", weights="none", levels=(3,)))[0]
    level3 = build_model("mrkd", "resnet18", weights="none", levels=(3,), use_scconv=False, fusion_conv=False)
    assert count_parameters(level3)[0] - rd3 == 1_180_160
    assert level3.bottleneck.fused_channels == 256 and len(level3.bottleneck.fuse) == 1
    level3.train()
    out = level3(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in out["student"]] == [256]


@pytest.mark.parametrize(
    ("name", "backbone"),
    [("rd", "resnet18"), ("mrkd", "mobilenet_v2"), ("stfpm", "resnet18"), ("stfpm-ae", "resnet18")],
)
def test_training_step_touches_only_trainable_params_and_not_the_teacher(name: str, backbone: str) -> None:
    options = {"image_size": 64} if name == "stfpm-ae" else {}
    model = build_model(name, backbone, weights="none", **options)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    groups = model.param_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for ps in groups.values() for p in ps} == trainable
    assert not trainable & {id(p) for p in model.teacher.parameters()}

    loss = _train_step(model, torch.randn(2, 3, 64, 64) * 2 + 1)
    assert torch.isfinite(loss) and loss.item() > 0
    assert not model.teacher.training
    for k, v in model.teacher.state_dict().items():  # weights and BN running stats
        assert torch.equal(v, teacher_before[k]), k
    assert all(p.grad is None for p in model.teacher.parameters())
    with_grad = [p.grad is not None and p.grad.abs().sum() > 0 for ps in groups.values() for p in ps]
    assert all(p.grad is not None for ps in groups.values() for p in ps)
    assert np.mean(with_grad) > 0.95


def test_losses_vanish_when_student_equals_teacher() -> None:
    teacher = [torch.randn(2, c, s, s).relu() + 0.01 for c, s in ((64, 16), (128, 8), (256, 4))]
    same = [t.clone() for t in teacher]
    for mode in ("flatten", "pixel"):
        assert cosine_loss(teacher, same, mode).item() <= 1e-6
        # 1 − cos(t, −t) = 2 per level.
        assert cosine_loss(teacher, [-t for t in teacher], mode).item() == pytest.approx(6.0, rel=1e-5)
    assert pyramid_loss(teacher, same).item() <= 1e-6
    # ½‖t̂ − (−t̂)‖² = ½·4 = 2 per position, per level.
    assert pyramid_loss(teacher, [-t for t in teacher]).item() == pytest.approx(6.0, rel=1e-5)

    rd, mrkd = _eval_model("rd", "resnet18"), _eval_model("mrkd", "resnet18")
    assert rd.loss({"teacher": teacher, "student": same}).item() <= 1e-6
    assert mrkd.loss({"teacher": teacher, "student": same, "generated": same}).item() <= 1e-6
    # mrkd: L_cos(T,S) + α·L_cos(T,G) with α = 1 → 0 + 6.
    assert mrkd.loss({"teacher": teacher, "student": same, "generated": [-t for t in teacher]}).item() == (
        pytest.approx(6.0, rel=1e-5)
    )
    stfpm, ae = _eval_model("stfpm", "resnet18"), _eval_model("stfpm-ae", "resnet18")
    assert stfpm.loss({"teacher": teacher, "student": same}).item() <= 1e-6
    assert ae.loss({"teacher": teacher, "student": same, "recon": same}).item() <= 1e-6


def test_rd_loss_modes_differ_as_documented() -> None:
    # Two positions: one identical, one opposite. Per-position cosine: (1 + −1)/2 → loss 1.
    t = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    s = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]])
    assert cosine_loss([t], [s], "pixel").item() == pytest.approx(1.0)
    # Flattened: cos((1,1,0,0), (1,−1,0,0)) = 0 → loss 1 too; scale s's second position to separate them.
    s2 = torch.tensor([[[[1.0, -3.0]], [[0.0, 0.0]]]])
    assert cosine_loss([t], [s2], "pixel").item() == pytest.approx(1.0)
    assert cosine_loss([t], [s2], "flatten").item() == pytest.approx(1 - (1 - 3) / (2**0.5 * 10**0.5))


def test_flattened_cosine_reads_channels_last_maps_without_copying_them() -> None:
    """Value and gradients as for C·H·W maps; a channels-last student is read in memory order (no clone)."""
    from torch.profiler import profile

    torch.manual_seed(0)
    teacher = [torch.randn(2, c, s, s) for c, s in ((64, 16), (128, 8))]
    student = [torch.randn(2, c, s, s) for c, s in ((64, 16), (128, 8))]
    plain = [x.clone().requires_grad_() for x in student]
    dense = [x.contiguous(memory_format=torch.channels_last).requires_grad_() for x in student]
    last = [t.contiguous(memory_format=torch.channels_last) for t in teacher]
    want = cosine_loss(teacher, plain, "flatten")
    with profile() as prof:
        got = cosine_loss(last, dense, "flatten")
    assert "aten::clone" not in {e.key for e in prof.key_averages()}
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    want.backward()
    got.backward()
    for a, b in zip(dense, plain):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)


def test_stfpm_ae_loss_is_alpha_recon_plus_similarity() -> None:
    model = build_model("stfpm-ae", "resnet18", weights="none", image_size=64, alpha=0.01)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    recon = sum(((r - s) ** 2).sum() / 2 for r, s in zip(out["recon"], out["student"]))
    torch.testing.assert_close(reconstruction_loss(out["recon"], out["student"]), recon)
    expected = 0.01 * recon + pyramid_loss(out["teacher"], out["recon"])
    torch.testing.assert_close(model.loss(out), expected)


def test_stfpm_ae_pretraining_freezing_and_stages() -> None:
    model = build_model("stfpm-ae", "resnet18", weights="none", image_size=64)
    # At 64 px the levels are 16, 8 and 4 px: 3, 2 and 1 pooling stages (each map stays ≥ 2×2).
    assert [ae.stages for ae in model.autoencoders] == [3, 2, 1]
    # At 256 px the paper's three contracting blocks fit every level: 64/32/16 → 8/4/2.
    assert [ae.stages for ae in build_model("stfpm-ae", "resnet18", weights="none").autoencoders] == [3, 3, 3]
    assert set(model.param_groups()) == {"student", "autoencoder"}
    model.train()
    loss = model.pretrain_loss(torch.randn(2, 3, 64, 64))
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None for p in model.autoencoders.parameters())
    assert all(p.grad is None for p in model.student.parameters())
    ae_params = sum(p.numel() for p in model.autoencoders.parameters())
    trainable, frozen = count_parameters(model)
    model.freeze_autoencoder(True)
    assert count_parameters(model) == (trainable - ae_params, frozen + ae_params)
    model.freeze_autoencoder(False)
    assert count_parameters(model) == (trainable, frozen)


def test_mrkd_masks_only_in_training_and_map_source_option() -> None:
    model = _eval_model("mrkd", "resnet18")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a1, _ = model(x)
        a2, _ = model(x)
        torch.testing.assert_close(a1, a2)  # no mask in eval
        model.train()
        g1, g2 = model(x)["generated"], model(x)["generated"]
        model.eval()
    assert not torch.equal(g1[0], g2[0])  # a fresh mask every training forward
    student_map = build_model("mrkd", "resnet18", weights="none", map_source="student")
    assert student_map.map_source == "student" and model.map_source == "generated"
    with pytest.raises(ConfigError, match="use_fmm"):
        build_model("mrkd", "resnet18", weights="none", use_fmm=False, map_source="generated")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "padim"}, "unknown model 'padim'"),
        ({"name": "rd", "backbone": "vgg16"}, "no backbone 'vgg16'"),
        ({"name": "rd", "mask_rate": 0.3}, "no option mask_rate"),
        ({"name": "mrkd", "backbone": "resnet18", "mask_rate": 1.5}, r"mask_rate=1\.5"),
        ({"name": "mrkd", "backbone": "resnet18", "levels": (0, 4)}, "levels="),
        ({"name": "rd", "backbone": "resnet18", "loss_mode": "l2"}, "loss_mode='l2'"),
        ({"name": "rd", "backbone": "resnet18", "bottleneck_width": 128}, "basic blocks"),
    ],
)
def test_bad_options_raise_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(weights="none", **kwargs)


def test_eval_path_exports_to_onnx_and_matches_onnxruntime() -> None:
    import onnxruntime as ort  # a hard dependency: its absence is a failure, not a skip

    model = _eval_model("mrkd", "mobilenet_v2")
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["anomaly_map", "score"],
        dynamic_axes={"images": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}},
    )
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64)
    amap, score = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_map, ref_score = model(x)
    np.testing.assert_allclose(amap, ref_map.numpy(), atol=1e-4)
    np.testing.assert_allclose(score, ref_score.numpy(), atol=1e-4)
