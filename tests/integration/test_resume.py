"""A run stopped after one epoch and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.checkpoint import LAST, load_model_from_checkpoint, read_checkpoint
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config

TIMING_KEYS = ("time/", "ms_per_image", "images_per_s", "memory/")  # memory: peak RSS differs between processes


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synthesize(root, ["weave"], size=64, n_train=10, n_test=6, seed=0)
    return root


class StopAfter(NullCallback):
    """Simulates a crash (e.g. a killed worker) right after an epoch's checkpoint was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.ended: list[TrainResult] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"stopped after epoch {epoch}")

    def on_end(self, result: TrainResult) -> None:
        self.ended.append(result)


def _config(model: str, root: Path, out: Path, extra: tuple[str, ...] = ()) -> Any:
    overrides = ["epochs=2", "batch_size=4", f"out_dir={out}", "seed=5", *extra]
    return resolve_config(model, "cpu-smoke", "weave", str(root), overrides)


def _stable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMING_KEYS)}


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("mrkd", ()),  # random feature masks: the RNG state must be restored exactly
        # pretraining phase + AE freeze
        ("stfpm-ae", ("model_options.ae_pretrain_epochs=1", "model_options.ae_freeze_epochs=1")),
    ],
)
def test_resume_is_bit_identical(tiny_root: Path, tmp_path: Path, model: str, extra: tuple[str, ...]) -> None:
    straight = train_category(_config(model, tiny_root, tmp_path / "straight", extra))
    assert straight.status == "FINISHED", straight.error

    stopper = StopAfter(epoch=2 if model == "stfpm-ae" else 1)
    interrupted_config = _config(model, tiny_root, tmp_path / "resumed", extra)
    stopped = train_category(interrupted_config, [stopper])
    assert stopped.status == "FAILED" and "stopped after epoch" in (stopped.error or "")
    assert stopper.ended and stopper.ended[0].status == "FAILED"
    assert (stopped.run_dir / "error.txt").is_file()
    loop = read_checkpoint(stopped.run_dir / LAST)["train_state"]["loop"]
    assert loop["epoch"] == 1 and len(loop["history"]) == stopper.epoch

    resumed = train_category(interrupted_config, resume_from=stopped.run_dir / LAST)
    assert resumed.status == "FINISHED", resumed.error
    assert any("resumed from" in n for n in resumed.notes)
    assert not (resumed.run_dir / "error.txt").exists()
    assert resumed.epochs_run == straight.epochs_run == 2

    a, _, meta_a = load_model_from_checkpoint(straight.checkpoint_path)
    b, _, meta_b = load_model_from_checkpoint(resumed.checkpoint_path)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    changed = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not changed, f"weights differ after resume: {changed[:5]}"
    assert _stable(resumed.metrics) == _stable(straight.metrics)
    assert resumed.thresholds == straight.thresholds
    assert meta_a["thresholds"] == meta_b["thresholds"]
    losses = [(h.get("train/loss"), h.get("val/loss")) for h in meta_a["history"]]
    assert losses == [(h.get("train/loss"), h.get("val/loss")) for h in meta_b["history"]]


def test_resume_refuses_changed_settings(tiny_root: Path, tmp_path: Path) -> None:
    from adkd.errors import ConfigError

    config = _config("rd", tiny_root, tmp_path, ("epochs=1",))
    done = train_category(config)
    assert done.status == "FINISHED"
    changed = _config("rd", tiny_root, tmp_path, ("epochs=2", "optimizer.lr=0.1"))
    with pytest.raises(ConfigError, match=r"cannot resume .*optimizer"):
        train_category(changed, resume_from=done.run_dir / LAST)


def test_resume_from_a_missing_file_is_a_config_error(tiny_root: Path, tmp_path: Path) -> None:
    from adkd.errors import ConfigError

    missing = tmp_path / "nowhere" / LAST
    ended: list[TrainResult] = []

    class Ends(NullCallback):
        def on_end(self, result: TrainResult) -> None:
            ended.append(result)

    with pytest.raises(ConfigError, match=rf"resume_from {missing} does not exist"):
        train_category(_config("rd", tiny_root, tmp_path / "out", ("epochs=1",)), [Ends()], resume_from=missing)
    assert [r.status for r in ended] == ["FAILED"]
    assert not (tmp_path / "out").exists()  # refused before any work: no run folder


def test_cli_resume_uses_the_run_folders_last_pt_or_starts_afresh(tiny_root: Path, tmp_path: Path) -> None:
    from adkd.pipelines.train.run_setup import run_dir_for
    from adkd.platform.runs import resume_path

    config = _config("rd", tiny_root, tmp_path)
    path, note = resume_path(config)
    assert path is None and note is not None and "does not exist: started from scratch" in note
    last = run_dir_for(config) / LAST
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert resume_path(config) == (last, None)
