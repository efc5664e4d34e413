"""Precision and memory-format defaults: bf16 + channels-last where bf16 is native, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.presets import resolve_config
from adkd.pipelines.train.runtime import Runtime, native_bf16


def _cpu_flags(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def _config(**values: object) -> TrainConfig:
    return TrainConfig(category="x", data="x", model="rd", device="cpu", **values)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_cpu_default_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    _cpu_flags(monkeypatch, avx512_bf16, amx)
    rt = Runtime.from_config(_config())
    assert (rt.amp, rt.channels_last) == (native, native)
    assert rt.describe().startswith("bf16 autocast, channels-last" if native else "fp32, contiguous")


def test_explicit_settings_win_over_the_cpu_default(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_flags(monkeypatch, True, True)
    rt = Runtime.from_config(_config(amp=False))
    assert (rt.amp, rt.channels_last) == (False, False)  # channels-last follows amp on CPU
    rt = Runtime.from_config(_config(amp=True, channels_last=False))
    assert (rt.amp, rt.channels_last) == (True, False)
    _cpu_flags(monkeypatch, False, False)
    rt = Runtime.from_config(_config(amp=True))
    assert (rt.amp, rt.channels_last) == (True, True)


@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_is_native_from_compute_capability_8(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], native: bool
) -> None:
    # Turing (7.5) and older emulate bf16; Ampere (8.0) and newer compute it natively.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    assert native_bf16(torch.device("cuda")) is native
    assert native_bf16(torch.device("cuda:0")) is native


def test_other_devices_are_not_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not native_bf16(torch.device("cuda"))
    assert not native_bf16(torch.device("meta"))


def test_smoke_preset_pins_fp32_on_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_flags(monkeypatch, True, True)
    for model in ("rd", "mrkd", "stfpm", "stfpm-ae"):
        rt = Runtime.from_config(resolve_config(model, "cpu-smoke", "x", "x", ["device=cpu"]))
        assert (rt.amp, rt.channels_last) == (False, False), model
    rt = Runtime.from_config(resolve_config("stfpm", "bottle-mobilenet", "x", "x", ["device=cpu"]))
    assert (rt.amp, rt.channels_last) == (True, True)
