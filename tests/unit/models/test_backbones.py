"""Teacher extractors: levels, freezing, and every way of getting (or not getting) weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from adkd.errors import WeightsError
from adkd.models.backbones import build_backbone, hub_checkpoint_dir, imagenet_weights_file

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"


@pytest.mark.parametrize(("backbone", "channels"), [("resnet18", (64, 128, 256)), ("mobilenet_v2", (24, 32, 96))])
def test_levels_have_the_declared_channels_and_strides(backbone: str, channels: tuple[int, ...]) -> None:
    net = build_backbone(backbone, "none")
    assert net.channels == channels
    assert net.strides == (4, 8, 16)
    feats = net(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // s, 96 // s) for c, s in zip(channels, net.strides)]


def test_frozen_teacher_stays_in_eval_and_keeps_bn_statistics() -> None:
    net = build_backbone("resnet18", "none", frozen=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    assert not net.training
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    out = net(torch.randn(2, 3, 64, 64) * 5 + 2)
    assert not out[0].requires_grad
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # A student (frozen=False) does move its BN statistics, so the check above can fail.
    student = build_backbone("resnet18", "none", frozen=False).train()
    mean_before = student.bn1.running_mean.clone()
    student(torch.randn(2, 3, 64, 64) * 5 + 2)
    assert not torch.equal(student.bn1.running_mean, mean_before)


def test_imagenet_offline_with_empty_cache_names_file_and_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ADKD_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        build_backbone("wide_resnet50_2", "imagenet")
    msg = str(err.value)
    assert "\n" not in msg
    assert "wide_resnet50_2-95faca4d.pth" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    assert "weights='none'" in msg


def test_imagenet_comes_from_the_torch_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ADKD_OFFLINE", "1")
    assert imagenet_weights_file("resnet18") == "resnet18-f37072fd.pth"
    source = torchvision.models.resnet18(weights=None)
    hub_checkpoint_dir().mkdir(parents=True)
    torch.save(source.state_dict(), hub_checkpoint_dir() / "resnet18-f37072fd.pth")
    net = build_backbone("resnet18", "imagenet")
    torch.testing.assert_close(net.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.testing.assert_close(net.bn1.running_var, source.bn1.running_var)


def test_mobilenet_accepts_full_and_features_only_state_dicts(tmp_path: Path) -> None:
    source = torchvision.models.mobilenet_v2(weights=None)
    full, feats = tmp_path / "full.pth", tmp_path / "features.pth"
    torch.save(source.state_dict(), full)
    torch.save({k: v for k, v in source.state_dict().items() if k.startswith("features.")}, feats)
    for path in (full, feats):
        net = build_backbone("mobilenet_v2", path)
        torch.testing.assert_close(net.features[13].conv[0][0].weight, source.features[13].conv[0][0].weight)


def test_bad_weight_files_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone("resnet18", tmp_path / "nope.pth")
    other = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), other)
    # resnet18 up to layer3: 90 tensors (weights, biases, BN running stats and counters).
    with pytest.raises(WeightsError, match="missing 90 of the 90 keys") as err:
        build_backbone("resnet18", other)
    assert "conv1.weight" in str(err.value)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save(state, bad_shape)
    with pytest.raises(WeightsError, match=r"layer1\.0\.conv1\.weight: \(64, 64, 1, 1\) instead of \(64, 64, 3, 3\)"):
        build_backbone("resnet18", bad_shape)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(WeightsError, match="expected a state dict"):
        build_backbone("resnet18", not_a_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_backbone("resnet18", garbage)


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"shared weights not found at {MOBILENET_WEIGHTS}")
def test_real_mobilenet_weights_load_and_match_torchvision() -> None:
    net = build_backbone("mobilenet_v2", MOBILENET_WEIGHTS)
    ref = torchvision.models.mobilenet_v2(weights=None)
    missing, _ = ref.load_state_dict(torch.load(MOBILENET_WEIGHTS, weights_only=True), strict=False)
    assert set(missing) == {"classifier.1.weight", "classifier.1.bias"}
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.features[:14](x)
    torch.testing.assert_close(net(x)[2], expected)
    # Real ImageNet BN statistics, not the identity init.
    assert net.features[0][1].running_var.std() > 0.1
