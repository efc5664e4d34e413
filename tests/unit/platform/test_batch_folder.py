"""Where `adkd train --all-categories` puts its batch folder: --out, else an out_dir set by the user, else the
runs folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.platform.runs import RunRequest, batch_runs_dir, resolve_config, run_settings


def _where(tmp_path: Path, overrides: list[str], out: Path | None = None) -> Path:
    request = RunRequest(model="stfpm", data=str(tmp_path), categories=["a", "b"], preset="cpu-smoke",
                         overrides=overrides, out=out)  # fmt: skip
    settings = run_settings()
    configs = [resolve_config(request, name, settings) for name in ("a", "b")]
    return batch_runs_dir(request, configs, settings)


def test_an_out_dir_set_by_the_user_is_where_the_batch_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADKD_RUNS_DIR", str(tmp_path / "runs"))
    assert _where(tmp_path, []) == tmp_path / "runs"  # nothing set: the runs folder
    # --set out_dir=... was dropped without a word with several categories (their workers write to scratch).
    assert _where(tmp_path, [f"out_dir={tmp_path / 'mine'}"]) == tmp_path / "mine"
    assert _where(tmp_path, [f"out_dir={tmp_path / 'mine'}"], out=tmp_path / "flag") == tmp_path / "flag"
