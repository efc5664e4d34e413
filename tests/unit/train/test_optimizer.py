"""The optimiser follows the config: groups per role, the AE's own lr, Adam betas, SGD momentum."""

from __future__ import annotations

import pytest
import torch

from adkd.models.zoo import build_model
from adkd.pipelines.train.presets import resolve_config
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import DenseAdam, build_optimizer, held_out_loss, loss_mode


def test_stfpm_ae_paper_optimizer_has_a_slower_autoencoder() -> None:
    config = resolve_config("stfpm-ae", "paper", "c", "/d", ["backbone=resnet18", "image_size=64"])
    # The autoencoder's schedule (model_options.ae_lr 0.04 in the paper preset) travels with the model.
    model = build_model("stfpm-ae", backbone="resnet18", weights="none", **{**config.model_options, "image_size": 64})
    opt = build_optimizer(model, config)
    assert isinstance(opt, torch.optim.SGD)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"student": 0.4, "autoencoder": 0.04}
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 1e-4 for g in opt.param_groups)
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_rd_paper_optimizer_is_adam_with_rd4ad_betas() -> None:
    config = resolve_config("rd", "paper", "c", "/d", ["backbone=resnet18"])
    model = build_model("rd", backbone="resnet18", weights="none")
    opt = build_optimizer(model, config)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.5, 0.999) and opt.param_groups[0]["lr"] == 0.005
    teacher = {id(p) for p in model.teacher.parameters()}
    assert not teacher & {id(p) for g in opt.param_groups for p in g["params"]}


def test_dense_adam_updates_channels_last_weights_as_fused_adam_does_without_copying_them() -> None:
    from torch.profiler import profile

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        layers = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.Conv2d(16, 4, 1), torch.nn.Flatten())
        return layers.to(memory_format=torch.channels_last)

    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    models = {"adam": net(), "dense": net()}
    opts = {
        "adam": torch.optim.Adam(models["adam"].parameters(), lr=0.01, betas=(0.5, 0.999), fused=True),
        "dense": DenseAdam(models["dense"].parameters(), lr=0.01, betas=(0.5, 0.999), fused=True),
    }
    for step in range(3):
        for name, model in models.items():
            opts[name].zero_grad()
            model(x).square().mean().backward()
            if name == "dense" and step == 2:
                with profile() as prof:
                    opts[name].step()
            else:
                opts[name].step()
    assert models["dense"][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert "aten::clone" not in {e.key for e in prof.key_averages()}  # fused Adam alone clones each such weight
    for a, b in zip(models["dense"].parameters(), models["adam"].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    state = opts["dense"].state_dict()["state"][0]
    want = opts["adam"].state_dict()["state"][0]
    assert state["exp_avg"].shape == want["exp_avg"].shape == (16, 8, 3, 3)
    torch.testing.assert_close(state["exp_avg_sq"], want["exp_avg_sq"], rtol=0, atol=1e-9)
    rd_model = build_model("rd", backbone="resnet18", weights="none")
    rd = build_optimizer(rd_model, resolve_config("rd", "paper", "c", "/d"))
    assert type(rd) is DenseAdam and rd.param_groups[0]["fused"]


def test_held_out_loss_leaves_batchnorm_and_rng_alone() -> None:
    torch.manual_seed(0)
    model = build_model("mrkd", backbone="resnet18", weights="none")
    rt = Runtime(device=torch.device("cpu"), amp=False, channels_last=False)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = held_out_loss(model, images, rt, batch_size=2, seed=1)
    second = held_out_loss(model, images, rt, batch_size=2, seed=1)
    assert first == pytest.approx(second, abs=0) and first > 0
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with loss_mode(model):
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert model.training and model.decoder.training and not any(m.training for m in bns)
    assert not model.training and not model.decoder.training
