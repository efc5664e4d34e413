"""The resize and data-gate settings: set like any other, refused with one line when wrong."""

from __future__ import annotations

import pytest

from adkd.cli.gate_flags import gate_options, overrides_from
from adkd.errors import ConfigError
from adkd.pipelines.data.gate import GateOptions
from adkd.pipelines.train.presets import resolve_config


def test_defaults_accept_varying_sizes_and_stretch() -> None:
    config = resolve_config("stfpm", "cpu-smoke", "c", "/data")
    assert config.resize == "stretch" and config.data_gate == GateOptions()
    assert config.data_gate.validate_kwargs() == {
        "one_size": False, "allow_mixed_modes": False, "min_train": 1, "image_level": False,
    }  # fmt: skip


def test_cli_flags_become_overrides_the_config_takes() -> None:
    flags = gate_options(one_size=True, allow_mixed_modes=False, min_train=5, image_level=True).overrides()
    assert flags == ["data_gate.one_size=true", "data_gate.min_train=5", "data_gate.image_level=true"]
    assert overrides_from({"one_size": True, "min_train": None}) == ["data_gate.one_size=true"]
    config = resolve_config("stfpm", "cpu-smoke", "c", "/data", [*flags, "resize=letterbox"])
    assert config.resize == "letterbox"
    assert config.data_gate == GateOptions(one_size=True, min_train=5, image_level=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [("resize=squash", "setting 'resize'"), ("data_gate.min_train=0", "data_gate.min_train"),
     ("data_gate.size=1", "unknown setting 'data_gate.size'")],
)  # fmt: skip
def test_bad_values_are_one_config_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("stfpm", "cpu-smoke", "c", "/data", [override])
