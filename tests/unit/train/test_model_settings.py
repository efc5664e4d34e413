"""Model settings are checked before training: one ConfigError line naming the setting and its range, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.train.presets import resolve_config
from tests.cli_process import run_adkd

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model_options.sigma=-1", ("model_options.sigma", ">= 0")),
        ("image_size=16", ("image_size=16", ">= 32")),
        ("model_options.mask_rate=1", ("model_options.mask_rate", "[0, 1)")),
        ("model_options.alpha=-0.5", ("model_options.alpha", ">= 0")),
        ("model_options.levels=[]", ("model_options.levels", "1, 2, 3")),
        ("model_options.levels=[4]", ("model_options.levels", "1, 2, 3")),
        ("model_options.sigma=20", ("model_options.sigma", "image_size")),
    ],
)
def test_bad_model_settings_fail_at_resolve_with_one_line(override: str, names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("mrkd", "cpu-smoke", "bottle", "/data", overrides=[override])
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in names), message


def test_good_edge_values_pass() -> None:
    for override in ("model_options.sigma=0", "image_size=32", "model_options.mask_rate=0", "model_options.alpha=0"):
        resolve_config("mrkd", "cpu-smoke", "bottle", "/data", overrides=[override])
    resolve_config("stfpm", "paper", "bottle", "/data")
    with pytest.raises(ConfigError, match="loss_scale"):
        resolve_config("stfpm", "paper", "bottle", "/data", overrides=["model_options.loss_scale=0"])


def test_cli_exits_2_with_one_line_before_any_epoch(tmp_path: Path) -> None:
    # One process is enough: every bad setting above fails in resolve_config, which the CLI calls first.
    override = "model_options.sigma=-1"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off"}
    args = ["train", "--model", "mrkd", "--preset", "paper", "--category", "bottle", "--data", str(tmp_path)]
    proc = run_adkd([*args, "--set", override], env=env, cwd=tmp_path, timeout=300, start_warm=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and override.split("=")[0] in lines[0], lines
    assert not any(tmp_path.rglob("last.pt"))
