"""The tune search space: defaults, config-file overrides, the preset's own point, the `--set` line."""

from __future__ import annotations

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.train.presets import resolve_config
from adkd.platform.tune.search import apply_params, default_point, parse_space, set_line
from adkd.platform.tune.space import log_grid

TWO_TERM = {"loss": "two_term"}


def test_default_spaces_follow_the_models_knobs() -> None:
    # mrkd's paper loss has no α: only λ is searched; the two-term loss adds α.
    assert parse_space("mrkd") == {"mask_rate": ("uniform", 0.1, 0.9)}
    assert parse_space("mrkd", model_options=TWO_TERM) == {
        "mask_rate": ("uniform", 0.1, 0.9),
        "alpha": ("loguniform", 1e-2, 10.0),
    }
    # stfpm-ae: the seed's Table 2 α sweep (0 and 1e-7 … 1e-4) and the AE freeze epochs.
    assert parse_space("stfpm-ae") == {"alpha": ("log_grid", 1e-7, 1e-4), "ae_freeze_epochs": ("int", 0, 10)}
    assert log_grid(1e-7, 1e-4) == [0.0, 1e-7, 1e-6, 1e-5, 1e-4]
    assert parse_space("mrkd", tune_lr=(1e-4, 1e-2))["lr"] == ("loguniform", 1e-4, 1e-2)


@pytest.mark.parametrize(
    ("model", "options", "custom", "message"),
    [
        ("mrkd", None, {"alpha": {"type": "loguniform", "low": 0.1, "high": 1}}, "'paper' loss has no α"),
        ("mrkd", {"use_fmm": False}, {"mask_rate": {"type": "uniform", "low": 0.1, "high": 0.5}}, "use_fmm=false"),
        ("mrkd", {"use_fmm": False}, None, "nothing left to tune"),
        ("mrkd", TWO_TERM, {"ae_freeze_epochs": {"type": "int", "low": 0, "high": 3}}, "stfpm-ae only"),
        ("stfpm-ae", None, {"ae_freeze_epochs": {"type": "uniform", "low": 0, "high": 3}}, 'type "int"'),
    ],
)
def test_knobs_the_settings_ignore_are_refused_in_one_line(
    model: str, options: dict | None, custom: dict | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_space(model, custom, model_options=options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("model", "custom", "message"),
    [
        ("rd", None, "adkd tune searches mrkd and stfpm-ae"),
        ("mrkd", {"beta": {"type": "uniform", "low": 0, "high": 1}}, "beta: unknown parameter"),
        ("stfpm-ae", {"mask_rate": {"type": "uniform", "low": 0.1, "high": 0.5}}, "mrkd only"),
        ("mrkd", {"alpha": {"type": "loguniform", "low": 0, "high": 1}}, "0 < low for loguniform"),
        ("mrkd", {"alpha": {"low": 0.1}}, 'type = "uniform"|"loguniform"'),
    ],
)
def test_bad_spaces_are_refused_by_name(model: str, custom: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space(model, custom, model_options=TWO_TERM if model == "mrkd" else None)


def test_config_file_space_replaces_one_parameter() -> None:
    space = parse_space("mrkd", {"mask_rate": {"type": "uniform", "low": 0.2, "high": 0.4}}, model_options=TWO_TERM)
    assert space["mask_rate"] == ("uniform", 0.2, 0.4) and space["alpha"] == ("loguniform", 1e-2, 10.0)


def test_apply_params_writes_nested_keys_without_touching_the_base() -> None:
    base = {"model_options": {"sigma": 4.0}, "optimizer": {"lr": 0.005}}
    out = apply_params(base, {"mask_rate": 0.3, "alpha": 2.0, "lr": 1e-3})
    assert out == {"model_options": {"sigma": 4.0, "mask_rate": 0.3, "alpha": 2.0}, "optimizer": {"lr": 1e-3}}
    assert base == {"model_options": {"sigma": 4.0}, "optimizer": {"lr": 0.005}}
    assert set_line({"mask_rate": 0.3, "alpha": 2.0}) == "--set model_options.alpha=2 --set model_options.mask_rate=0.3"


def test_default_point_reads_registry_defaults_and_preset_overrides() -> None:
    space = parse_space("mrkd", model_options=TWO_TERM)
    base = resolve_config("mrkd", "cpu-smoke", "disc", "/data").model_dump(mode="json")
    assert default_point(base, space) == {"mask_rate": 0.5, "alpha": 1.0}  # the registry's mrkd defaults
    base["model_options"]["mask_rate"] = 0.25
    assert default_point(base, space) == {"mask_rate": 0.25, "alpha": 1.0}
    base["model_options"]["alpha"] = 100.0  # outside [1e-2, 10]: no comparison point
    assert default_point(base, space) is None


def test_default_point_of_stfpm_ae_is_the_papers_alpha() -> None:
    base = resolve_config("stfpm-ae", "paper", "disc", "/data").model_dump(mode="json")
    assert default_point(base, parse_space("stfpm-ae")) == {"alpha": 1e-7, "ae_freeze_epochs": 5}
    lr_space = parse_space("stfpm-ae", tune_lr=(1e-3, 1.0))
    assert default_point(base, lr_space) == {"alpha": 1e-7, "ae_freeze_epochs": 5, "lr": base["optimizer"]["lr"]}
    assert apply_params(base, {"ae_freeze_epochs": 3.0})["model_options"]["ae_freeze_epochs"] == 3
    line = set_line({"alpha": 0.0, "ae_freeze_epochs": 3.0})
    assert line == "--set model_options.ae_freeze_epochs=3 --set model_options.alpha=0"


def test_asha_never_stops_the_preset_trial_before_its_last_epoch() -> None:
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from adkd.platform.tune.search import _preset_keeping_asha

    asha = _preset_keeping_asha()(
        {"alpha": 1.0}, time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, metric="objective", mode="max"
    )
    good, weak, preset = (SimpleNamespace(trial_id=i, config={"alpha": a}) for i, a in (("g", 0.5), ("w", 2), ("p", 1)))
    for trial in (good, weak, preset):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"epoch": 1, "objective": 0.9}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, {"epoch": 1, "objective": 0.1}) == TrialScheduler.STOP
    assert asha.on_trial_result(None, preset, {"epoch": 1, "objective": 0.1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, preset, {"epoch": 4, "objective": 0.1}) == TrialScheduler.STOP  # done
