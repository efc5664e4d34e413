"""Checkpoints keep loading: format 1 of earlier releases, format 2 against later default changes, old settings."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adkd.errors import ConfigError
from adkd.models.mrkd import mrkd
from adkd.models.zoo import MODEL_ZOO, ModelSpec, build_model
from adkd.pipelines.train.checkpoint import (
    FORMAT,
    checkpoint_dict,
    load_model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from adkd.pipelines.train.config import validate_config

V1 = Path(__file__).parents[2] / "data" / "checkpoints_v1"
MODELS = ("rd", "mrkd", "stfpm", "stfpm-ae")
CHECKPOINT_LOG = "adkd.pipelines.train.checkpoint"


def _maps(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        maps, scores = model.eval()(x)
    return maps.numpy(), scores.numpy()


@pytest.mark.parametrize("name", MODELS)
def test_release_46866c5_checkpoints_load_and_predict_as_that_release_did(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOG):
        model, config, meta = load_model_from_checkpoint(V1 / f"{name}.pt")
    assert "format 1" in caplog.text and "1345e72" in caplog.text and len(caplog.records) == 1
    maps, scores = _maps(model, torch.from_numpy(np.load(V1 / "input.npy")))
    expected = np.load(V1 / f"{name}.maps.npy")
    assert np.isfinite(maps).all() and maps.std() > 0
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, expected.reshape(len(expected), -1).max(axis=1), rtol=1e-5, atol=1e-6)
    # Every option is now explicit: the stored overrides over that release's defaults.
    assert set(config.model_options) == set(MODEL_ZOO[name].defaults)
    assert meta["model"] == name and config.backbone == "mobilenet_v2"


def test_release_46866c5_options_are_that_releases_defaults_and_the_runs_own() -> None:
    options = {m: read_checkpoint(V1 / f"{m}.pt")["config"]["model_options"] for m in ("rd", "mrkd", "stfpm-ae")}
    assert options["rd"] == {"levels": [3], "loss_mode": "pixel", "bottleneck_width": None, "sigma": 4.0}
    assert options["mrkd"]["fusion_conv"] is True and options["mrkd"]["scconv_fusion"] == "per_channel"
    assert options["mrkd"]["loss"] == "paper" and options["mrkd"]["levels"] == [1, 2, 3]
    # stfpm-ae's training phases were top-level settings then; the run set them through the cpu-smoke preset.
    ae = options["stfpm-ae"]
    assert (ae["ae_stages"], ae["image_size"], ae["ae_pretrain_epochs"], ae["ae_lr"]) == (3, 64, 1, 0.4)


def _config(model: str, **values: Any) -> Any:
    base = {"category": "disc", "data": "/data", "model": model, "backbone": "mobilenet_v2", "weights": "none"}
    return validate_config({**base, **values})


def _format1(path: Path, model: torch.nn.Module, config_values: dict[str, Any]) -> Path:
    """A checkpoint as releases before format 2 wrote it: model_options = the run's overrides only."""
    return save_checkpoint(path, {"format": 1, "model_state": model.state_dict(), "config": config_values, "meta": {}})


@pytest.mark.parametrize(
    ("name", "old", "stored"),
    [
        # Before 1345e72: mrkd had no 1x1 fusion, SCConv's all-channel softmax and the two-term loss.
        ("mrkd", {"fusion_conv": False, "scconv_fusion": "softmax_all_channels", "loss": "two_term"}, {}),
        # stfpm-ae had at most two U-Net stages; its phases were top-level settings.
        ("stfpm-ae", {"ae_stages": 2, "image_size": 64}, {"image_size": 64}),
    ],
)
def test_format1_checkpoint_of_the_older_defaults_gets_those(
    tmp_path: Path, name: str, old: dict[str, Any], stored: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    written = build_model(name, "mobilenet_v2", weights="none", **old)
    values = _config(name).model_dump(mode="json") | {"model_options": stored}
    if name == "stfpm-ae":
        values |= {"ae_pretrain_epochs": 2, "ae_pretrain_lr": 1e-3, "ae_lr": None, "ae_freeze_epochs": 0}
    path = _format1(tmp_path / "model.pt", written, values)
    loaded, config, _ = load_model_from_checkpoint(path)
    assert {k: config.model_options[k] for k in old} == old
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_array_equal(_maps(loaded, x)[0], _maps(written, x)[0])
    if name == "stfpm-ae":
        assert config.model_options["ae_pretrain_epochs"] == 2 and loaded.ae_schedule.pretrain_epochs == 2


def test_format1_checkpoint_matching_no_release_is_refused_in_one_line(tmp_path: Path) -> None:
    model = build_model("rd", "mobilenet_v2", weights="none")
    state = model.state_dict()
    state["decoder.extra"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "m.pt", {"format": 1, "model_state": state, "config": _config("rd").model_dump()})
    with pytest.raises(ConfigError, match="format 1 and its weights match no earlier release's 'rd'") as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)


def test_format2_stores_every_option_so_a_later_default_change_alters_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    config = _config("mrkd", model_options={"mask_rate": 0.25})
    model = build_model("mrkd", "mobilenet_v2", weights="none", **config.model_options)
    path = save_checkpoint(tmp_path / "model.pt", checkpoint_dict(model, config, {"model": "mrkd"}))
    state = read_checkpoint(path)
    assert state["format"] == FORMAT == 2 and state["adkd_version"]
    assert state["config"]["model_options"] == {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in MODEL_ZOO["mrkd"].defaults.items()},
        "mask_rate": 0.25,
    }
    # A later release changes mrkd's defaults (a weight-changing one and a behaviour-only one).
    later = ModelSpec("mrkd", "mrkd with other defaults", functools.partial(mrkd, fusion_conv=False, sigma=0.0))
    monkeypatch.setitem(MODEL_ZOO, "mrkd", later)
    assert MODEL_ZOO["mrkd"].defaults["sigma"] == 0.0
    loaded, loaded_config, _ = load_model_from_checkpoint(path)
    assert loaded_config.model_options["sigma"] == 4.0 and loaded_config.model_options["fusion_conv"] is True
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_array_equal(_maps(loaded, x)[0], _maps(model, x)[0])


def test_retired_setting_value_loads_with_one_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _config("stfpm")
    model = build_model("stfpm", "mobilenet_v2", weights="none")
    state = checkpoint_dict(model, config, {})
    state["config"]["int8_scheme"] = "qop-u8u8"  # a scheme adkd offered until 245425b
    path = save_checkpoint(tmp_path / "model.pt", state)
    with caplog.at_level(logging.WARNING, logger="adkd.pipelines.train.config"):
        _, loaded, _ = load_model_from_checkpoint(path)
    assert loaded.int8_scheme == "qop-u8s8"
    assert len(caplog.records) == 1 and "int8_scheme='qop-u8u8' was retired" in caplog.text


def test_old_autoencoder_settings_move_into_stfpm_ae_options(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="adkd.pipelines.train.config"):
        ae = _config("stfpm-ae", ae_freeze_epochs=3, model_options={"alpha": 0.0})
    assert ae.model_options == {"alpha": 0.0, "ae_freeze_epochs": 3}
    assert "setting 'ae_freeze_epochs' is now 'model_options.ae_freeze_epochs'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adkd.pipelines.train.config"):
        rd = _config("rd", ae_pretrain_epochs=0, ae_lr=None)  # what every config of other models carried
    assert rd.model_options == {} and not caplog.records
    with pytest.raises(ConfigError, match="setting 'ae_freeze_epochs' is for stfpm-ae"):
        _config("rd", ae_freeze_epochs=2)
