"""benchmarks/gpu_check.sh --dry-run on CPU: the script that runs on a GPU machine works end to end, runs
every gpu test, and accepts a skip only for the reason its mode expects (on CPU: no CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def _gpu_test_ids() -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-m", "gpu", "tests/gpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {line.split("::", 1)[1] for line in proc.stdout.splitlines() if line.startswith("tests/gpu/")}


def test_gpu_check_dry_run_runs_every_gpu_test_and_writes_json_and_markdown(tmp_path: Path) -> None:
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
    # Every gpu test ran and skipped for a reason a CPU has: a test skipped for anything else (a missing
    # package, a leftover Ray) would be a gpu path the GPU run would not check either.
    cases = ET.parse(tmp_path / "gpu_tests.xml").getroot().iter("testcase")
    skipped = {c.get("name"): [s.get("message") for s in c.findall("skipped")] for c in cases}
    assert set(skipped) == _gpu_test_ids() and len(skipped) >= 7
    cpu_reasons = {"needs a CUDA GPU", "NCCL data parallel needs 2 GPUs (one rank per GPU)"}
    assert all(len(reasons) == 1 and reasons[0] in cpu_reasons for reasons in skipped.values()), skipped
    assert summary["unexpected_skips"] == {}
    tests = summary["tests"]
    assert tests["tests"] == tests["skipped"] == len(skipped) and tests["failures"] == tests["errors"] == 0
    rows = summary["rows"]
    assert {(r["model"], r["bf16"]) for r in rows} == {(m, b) for m in ("rd", "mrkd", "stfpm") for b in (False, True)}
    assert all(r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0 for r in rows)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| stfpm | resnet18 | 32 | on |" in markdown
    assert f"gpu tests: 0 passed, 0 failed, {len(skipped)} skipped." in markdown
    # The moonshot's parts ran end to end: a training step, a cached-teacher run, two categories at once through
    # `adkd train --categories` (Ray), and the 2-GPU DDP part skipped for want of GPUs.
    moon = summary["moonshot"]
    assert moon["errors"] == {} and moon["steps"]["variants"]["eager"]["images_per_s"] > 0
    assert moon["cached_run"]["images_per_s_steps"] > 0 and moon["cached_run"]["peak_rss_mb"] > 0
    assert moon["categories"]["rc"] == 0 and len(moon["categories"]["images_per_s"]) == 2
    assert moon["ddp"] == {"skipped": "needs 2 GPUs, this machine has 0"}
    assert "`adkd train --categories" in markdown
