"""Registered-model names from the name template, and the experiment name from flags, environment and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.platform.registry.naming import registered_name
from adkd.platform.registry.publishing import evaluated_on
from adkd.settings import DEFAULT_MODEL_NAME, load_settings


def test_the_default_name_stays_adkd_category() -> None:
    assert DEFAULT_MODEL_NAME == "adkd-{category}"
    assert registered_name("bottle", model="rd", dataset="mvtec") == "adkd-bottle"
    assert load_settings().registered_model_name == "adkd-{category}"


def test_the_template_keeps_data_sets_and_models_apart() -> None:
    template = "adkd-{category}-{dataset}"
    names = {registered_name("bottle", dataset=d, template=template) for d in ("mvtec", "plant-b")}
    assert names == {"adkd-bottle-mvtec", "adkd-bottle-plant-b"}
    by_model = "{dataset}.{category}.{model}"
    assert registered_name("bottle", model="stfpm-ae", dataset="mvtec", template=by_model) == "mvtec.bottle.stfpm-ae"


def test_names_stay_usable_in_models_uris() -> None:
    # '/', ':' and '@' would break models:/NAME@ALIAS; an empty field leaves no doubled separator.
    assert registered_name("bottle", dataset="my data/v2@s3", template="adkd-{category}-{dataset}") == (
        "adkd-bottle-my-data-v2-s3"
    )
    assert registered_name("bottle", dataset="", template="adkd-{category}-{dataset}") == "adkd-bottle"


@pytest.mark.parametrize(
    ("template", "says"),
    [("adkd-{cat}", "may use only"), ("adkd-{dataset}", "must hold {category}"), ("adkd-{category", "not a valid")],
)
def test_a_bad_template_is_refused_in_one_line(template: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADKD_REGISTERED_MODEL_NAME", template)
    with pytest.raises(ConfigError, match="registered_model_name") as info:
        load_settings()
    assert says in str(info.value) and "\n" not in str(info.value)


def test_mlflow_experiment_name_is_honoured_below_adkd_and_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ADKD_EXPERIMENT", raising=False)
    monkeypatch.chdir(tmp_path)  # no adkd.toml
    assert load_settings().experiment is None  # the data set's name, chosen by the run
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "x")
    assert load_settings().experiment == "x"
    monkeypatch.setenv("ADKD_EXPERIMENT", "y")
    assert load_settings().experiment == "y"
    assert load_settings(experiment="flag").experiment == "flag"
    (tmp_path / "adkd.toml").write_text('experiment = "from-file"\n')
    monkeypatch.delenv("ADKD_EXPERIMENT")
    assert load_settings().experiment == "x"  # the environment over the file


def test_a_version_records_its_local_data_root_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plant-a" / "bottle").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    tags = {"data": "plant-a", "data_fingerprint": "f" * 64}
    assert evaluated_on(tags) == {
        "data_fingerprint": "f" * 64,
        "data": str(tmp_path / "plant-a"),
        "dataset": "plant-a",
    }
    assert evaluated_on({"data": "s3://bucket/sets/mvtec"})["dataset"] == "mvtec"
