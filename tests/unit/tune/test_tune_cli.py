"""`adkd tune` checks its categories before Ray starts."""

from __future__ import annotations

import os
from pathlib import Path

from adkd.pipelines.data.synthetic_dataset import synthesize
from tests.cli_process import run_adkd

REPO = Path(__file__).resolve().parents[3]


def test_a_missing_category_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    synthesize(tmp_path / "data", ["weave"], size=32, n_train=4, n_test=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off", "RAY_TMPDIR": str(tmp_path / "ray")}
    args = ["tune", "--category", "disc", "--data", "data", "--model", "mrkd", "--num-samples", "2", "--epochs", "1"]
    proc = run_adkd(args, env=env, cwd=tmp_path, timeout=120, start_warm=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: category disc not found under {tmp_path / 'data'}: available are weave"], proc.stderr
    assert "Trial" not in proc.stdout and not (tmp_path / "ray").exists()  # no trial ran, no Ray started
