"""benchmarks/gpu_check.sh --dry-run passes on CPU, so the script that runs on a GPU machine is known to work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(900)


def test_gpu_check_dry_run_writes_json_and_markdown(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["env"]["mode"] == "dry run on CPU"
    assert summary["tests"]["tests"] >= 5 and summary["tests"]["failures"] == summary["tests"]["errors"] == 0
    rows = summary["rows"]
    assert {(r["model"], r["bf16"]) for r in rows} == {(m, b) for m in ("rd", "mrkd", "stfpm") for b in (False, True)}
    assert all(r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0 for r in rows)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| stfpm | resnet18 | 64 | on |" in markdown and "skipped" in markdown


@pytest.mark.parametrize("out", ["benchmarks/results/gpu", "benchmarks/results", "./benchmarks/other/../results/x"])
def test_a_dry_run_refuses_to_write_into_the_committed_results(tmp_path: Path, out: str) -> None:
    results = REPO / "benchmarks" / "results"
    before = sorted((p.relative_to(results), p.stat().st_mtime_ns) for p in results.rglob("*"))
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", out],
        cwd=REPO,
        env={**os.environ, "PYTHON": "false"},  # nothing may run before the refusal
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "a dry run does not write into benchmarks/results/" in proc.stderr
    assert sorted((p.relative_to(results), p.stat().st_mtime_ns) for p in results.rglob("*")) == before
