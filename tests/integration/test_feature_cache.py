"""Training from cached teacher features ends bit-identical to running the teacher in every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adkd.errors import ConfigError
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.feature_cache import augmentation_settings, plan_cache
from adkd.pipelines.train.presets import resolve_config


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synthesize(root, ["weave"], size=64, n_train=10, n_test=6, seed=0)
    return root


def _config(model: str, root: Path, out: Path, extra: tuple[str, ...]) -> Any:
    # 8 training images in batches of 3: the last batch has 2, so cached rows meet varying batch sizes.
    # device=cpu: bit-identity is a CPU promise (cuDNN's backward kernels are not deterministic).
    overrides = [
        "device=cpu",
        "epochs=2",
        "batch_size=3",
        f"out_dir={out}",
        "seed=3",
        "skip_validation=true",
        "evaluate_test=false",
        *extra,
    ]
    return resolve_config(model, "cpu-smoke", "weave", str(root), overrides)


def _train(model: str, root: Path, out: Path, extra: tuple[str, ...]) -> Any:
    result = train_category(_config(model, root, out, extra))
    assert result.status == "FINISHED", result.error
    return result


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("rd", ()),
        ("mrkd", ()),  # random feature masks in every step: the cache must not move the RNG stream
        ("stfpm", ("backbone=resnet18",)),
        ("stfpm-ae", ("model_options.ae_pretrain_epochs=1",)),  # pretraining reads teacher features too
    ],
)
def test_cached_run_is_bit_identical(tiny_root: Path, tmp_path: Path, model: str, extra: tuple[str, ...]) -> None:
    plain = _train(model, tiny_root, tmp_path / "plain", ("teacher_cache=false", *extra))
    cached = _train(model, tiny_root, tmp_path / "cached", ("teacher_cache=true", *extra))
    assert not any("teacher features" in n for n in plain.notes)
    assert any("computed once" in n and "in cpu memory" in n for n in cached.notes), cached.notes

    history = [
        {k: v for k, v in h.items() if not any(w in k for w in ("time", "per_s", "memory/"))}
        for h in load_model_from_checkpoint(plain.checkpoint_path)[2]["history"]
    ]
    assert history == [
        {k: v for k, v in h.items() if not any(w in k for w in ("time", "per_s", "memory/"))}
        for h in load_model_from_checkpoint(cached.checkpoint_path)[2]["history"]
    ]
    a = load_model_from_checkpoint(plain.checkpoint_path)[0].state_dict()
    b = load_model_from_checkpoint(cached.checkpoint_path)[0].state_dict()
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"{len(changed)} tensors differ, e.g. {changed[:3]}"


def test_cache_spilled_to_a_file_is_identical_and_removed(tiny_root: Path, tmp_path: Path) -> None:
    plain = _train("mrkd", tiny_root, tmp_path / "plain", ("teacher_cache=false",))
    spilled = _train("mrkd", tiny_root, tmp_path / "spill", ("teacher_cache=true", "teacher_cache_max_gb=0"))
    assert any("in a file in" in n for n in spilled.notes), spilled.notes
    assert not list(spilled.run_dir.glob("teacher-cache-*")), "the spill file outlived the run"
    a = load_model_from_checkpoint(plain.checkpoint_path)[0].state_dict()
    b = load_model_from_checkpoint(spilled.checkpoint_path)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class AugmentedConfig(TrainConfig):
    """A TrainConfig with an input augmentation (none ships yet; the cache must refuse any that appears)."""

    augment_flip: bool = False


def test_augmentation_turns_the_cache_off(tiny_root: Path, tmp_path: Path) -> None:
    from adkd.models.zoo import build_model
    from adkd.pipelines.train.runtime import Runtime

    base = _config("stfpm", tiny_root, tmp_path, ()).model_dump()
    model = build_model("stfpm", backbone="mobilenet_v2", weights="none")
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    rt = Runtime(torch.device("cpu"), amp=False, channels_last=False)

    auto = AugmentedConfig(**{**base, "augment_flip": True})
    assert augmentation_settings(auto) == ["augment_flip"]
    notes: list[str] = []
    assert plan_cache(auto, model, images, rt, tmp_path, notes) is None
    assert notes == ["teacher feature cache off: input augmentation is on (augment_flip)"]

    forced = AugmentedConfig(**{**base, "augment_flip": True, "teacher_cache": True})
    with pytest.raises(ConfigError, match="teacher_cache=true but input augmentation is on"):
        plan_cache(forced, model, images, rt, tmp_path, [])

    plain = AugmentedConfig(**base)
    assert augmentation_settings(plain) == []
    assert plan_cache(plain, model, images, rt, tmp_path, []) is not None
