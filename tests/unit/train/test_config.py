"""TrainConfig, presets and resolve_config: the papers' values, overrides, files and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.train.presets import MODELS, PRESETS, apply_override, parse_value, read_config_file, resolve_config


def test_paper_presets_hold_the_papers_values() -> None:
    rd = resolve_config("rd", "paper", "bottle", "/data")
    assert (rd.backbone, rd.image_size, rd.batch_size, rd.epochs) == ("wide_resnet50_2", 256, 16, 200)
    assert (rd.optimizer.name, rd.optimizer.lr, rd.optimizer.betas) == ("adam", 0.005, (0.5, 0.999))
    assert rd.val_fraction == 0 and rd.keep == "last"  # RD4AD trains on every train/good image

    mrkd = resolve_config("mrkd", "paper", "bottle", "/data")
    assert (mrkd.optimizer.name, mrkd.optimizer.lr, mrkd.batch_size, mrkd.epochs) == ("adam", 1e-3, 16, 200)
    assert mrkd.optimizer.weight_decay > 0 and mrkd.val_fraction == 0 and mrkd.keep == "last"
    assert mrkd.early_stopping == 0  # nothing held out to stop on
    assert mrkd.model_options["loss"] == "paper" and mrkd.model_options["fusion_conv"] is True

    st = resolve_config("stfpm", "paper", "bottle", "/data")
    assert (st.backbone, st.image_size, st.batch_size, st.epochs) == ("resnet18", 256, 32, 100)
    assert (st.optimizer.name, st.optimizer.lr, st.optimizer.momentum) == ("sgd", 0.4, 0.9)
    assert st.optimizer.weight_decay == 1e-4 and st.val_fraction == 0.2 and st.keep == "best_val_loss"
    assert st.model_options == {"sigma": 0.0, "loss_scale": 1.0}  # no blur, the official loss scale

    ae = resolve_config("stfpm-ae", "paper", "bottle", "/data")
    options = ae.model_options
    assert (options["ae_pretrain_epochs"], options["ae_pretrain_lr"], ae.epochs) == (100, 1e-3, 100)
    assert (ae.optimizer.name, ae.optimizer.lr, ae.optimizer.momentum, options["ae_lr"]) == ("sgd", 0.4, 0.9, 0.04)
    assert options["ae_freeze_epochs"] == 5 and ae.grad_clip_norm and options["alpha"] == 1e-7


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("model", MODELS)
def test_every_preset_resolves_for_every_model(preset: str, model: str) -> None:
    config = resolve_config(model, preset, "cat", "/data")
    assert config.model == model and config.preset == preset
    assert PRESETS[preset][model].description


def test_cpu_smoke_is_small() -> None:
    for model in MODELS:
        c = resolve_config(model, "cpu-smoke", "cat", "/data")
        assert 64 <= c.image_size <= 128 and c.backbone in ("resnet18", "mobilenet_v2")
        assert c.weights == "none" and c.total_epochs <= 16


def test_overrides_reach_nested_settings_and_parse_json() -> None:
    c = resolve_config(
        "mrkd",
        "cpu-smoke",
        "cat",
        "/data",
        ["optimizer.lr=0.01", "optimizer.betas=[0.9, 0.99]", "model_options.mask_rate=0.25", "amp=false"],
    )
    assert c.optimizer.lr == 0.01 and c.optimizer.betas == (0.9, 0.99)
    assert c.model_options == {"mask_rate": 0.25} and c.amp is False
    # untouched preset values survive a nested override
    assert c.optimizer.name == "adam"
    assert parse_value("abc") == "abc" and parse_value("3") == 3 and parse_value("null") is None


def test_a_list_setting_takes_bare_words_and_says_how_to_write_one() -> None:
    # The shell leaves [openvino, openvino-bf16] unquoted inside: not JSON, still a list of the words.
    assert parse_value("[openvino, openvino-bf16]") == ["openvino", "openvino-bf16"]
    assert parse_value("[1, x]") == [1, "x"] and parse_value("[]") == [] and parse_value("[a") == "[a"
    c = resolve_config("rd", "cpu-smoke", "cat", "/data", ["int8_runtimes=[openvino]", "float_runtimes=[]"])
    assert c.int8_runtimes == ["openvino"] and c.float_runtimes == []
    with pytest.raises(ConfigError, match=r"'float_runtimes\.0': Input should be 'openvino' or 'openvino-bf16'"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["float_runtimes=[tensorrt]"])
    with pytest.raises(ConfigError) as err:
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["int8_runtimes=openvino"])
    assert str(err.value).endswith(
        "setting 'int8_runtimes': Input should be a valid list: write it as [a, b] (--set int8_runtimes=[a,b], [] for "
        "none)"
    )


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'optimizr'"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["optimizr.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown setting 'optimizer\.momentun'"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["optimizer.momentun=1"])


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["batch_size=abc"])
    with pytest.raises(ConfigError, match=r"optimizer\.name"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["optimizer.name=rmsprop"])
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        resolve_config("stfpm", "paper", "cat", "/data", ["val_fraction=0"])
    with pytest.raises(ConfigError, match="not key=value"):
        apply_override({}, "epochs")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve_config("rd", "fast", "cat", "/data")
    with pytest.raises(ConfigError, match=r"^unknown model 'rd4ad'; choose one of mrkd, rd, stfpm, stfpm-ae$"):
        resolve_config("rd4ad", "paper", "cat", "/data")
    with pytest.raises(ConfigError, match="crop_size"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", ["crop_size=100"])


def test_config_files_and_precedence(tmp_path) -> None:
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("epochs: 3\noptimizer:\n  lr: 0.002\n")
    c = resolve_config("rd", "cpu-smoke", "cat", "/data", ["epochs=5"], config_file=yaml_file)
    assert c.epochs == 5  # --set beats the file
    assert c.optimizer.lr == 0.002 and c.optimizer.betas == (0.5, 0.999)  # file beats the preset, merged

    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps({"seed": 7}))
    assert resolve_config("rd", "cpu-smoke", "cat", "/data", config_file=json_file).seed == 7

    toml_file = tmp_path / "adkd.toml"
    toml_file.write_text("[train]\nbatch_size = 4\n")
    assert resolve_config("rd", "cpu-smoke", "cat", "/data", config_file=toml_file).batch_size == 4

    c = resolve_config("rd", "cpu-smoke", "cat", "/data", defaults={"out_dir": "x", "epochs": 99}, settings={"seed": 3})
    assert (c.out_dir, c.epochs, c.seed) == ("x", 16, 3)  # defaults < preset < settings

    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", config_file=bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown setting 'epoch'"):
        resolve_config("rd", "cpu-smoke", "cat", "/data", config_file=typo)


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("c.yaml", "epochs: [\n", "expected the node content, but found '<stream end>' at line 2, column 1"),
        ("c.yaml", "epochs: 3\n batch_size: 2\n", "mapping values are not allowed here at line 2, column 12"),
        ("c.json", '{"epochs": }', "Expecting value: line 1 column 12 (char 11)"),
    ],
)
def test_an_unparsable_config_file_is_one_line_with_its_place(tmp_path: Path, name: str, text: str, said: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        read_config_file(tmp_path / name)
    assert str(err.value) == f"config file {tmp_path / name} cannot be parsed: {said}"
