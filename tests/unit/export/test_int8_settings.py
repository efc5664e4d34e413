"""A setting that cannot be honoured is refused before any epoch: int8 export needs held-out normal images."""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.callbacks import NullCallback
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config


def test_export_int8_without_validation_images_is_a_settings_error() -> None:
    with pytest.raises(ConfigError, match="export_int8=true calibrates and gates the int8 model on validation"):
        resolve_config("rd", "paper", "bottle", "data", ["export_int8=true"])  # the paper preset holds none out


def test_too_few_validation_images_stop_the_run_before_its_first_epoch(tmp_path: Path) -> None:
    synthesize(tmp_path / "data", ["weave"], size=64, n_train=10, n_test=4, seed=0)  # 2 held out
    overrides = [
        "export_int8=true",
        "weights=none",
        "num_threads=1",
        "skip_validation=true",
        f"out_dir={tmp_path / 'runs'}",
    ]
    config = resolve_config("stfpm", "cpu-smoke", "weave", str(tmp_path / "data"), overrides)
    epochs: list[int] = []

    class Epochs(NullCallback):
        def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
            epochs.append(epoch)

    with pytest.raises(
        ConfigError, match=r"export_int8 needs at least 8 validation images .*got 2; raise val_fraction"
    ):
        train_category(config, [Epochs()])
    assert epochs == [] and not (tmp_path / "runs" / "stfpm" / "weave" / "last.pt").exists()
