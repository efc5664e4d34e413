"""A per-position category (tiling.mode=per_position) goes to the Ray position runs; --resume says it does not apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.pipelines.train.callbacks import TrainResult
from adkd.pipelines.train.config import TilingConfig


def test_only_a_per_position_category_itself_splits_into_position_runs() -> None:
    assert TilingConfig(tile_size=32, mode="per_position").splits_positions
    assert not TilingConfig(tile_size=32, mode="per_position", position=0).splits_positions  # one position's job
    assert not TilingConfig(tile_size=32).splits_positions


def test_resume_on_a_per_position_category_says_its_positions_trained_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adkd.platform.runs as runs

    (tmp_path / "data" / "disc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADKD_RUNS_DIR", str(tmp_path / "runs"))
    trained = []

    def positions(config, callbacks, settings) -> TrainResult:
        trained.append(config.tiling.mode)
        return TrainResult("disc", "stfpm", "FINISHED", tmp_path / "run")

    monkeypatch.setattr(runs, "train_positions", positions)
    request = runs.RunRequest(
        model="stfpm",
        data=str(tmp_path / "data"),
        category="disc",
        preset="cpu-smoke",
        overrides=["tiling.tile_size=32", "tiling.mode=per_position"],
        tracking=False,
        resume=True,
    )
    result = runs.train_one(request)
    assert trained == ["per_position"]
    assert result.notes == ["resume asked but per-position runs do not resume: the positions trained from scratch"]
    request.resume = False
    assert runs.train_one(request).notes == []
