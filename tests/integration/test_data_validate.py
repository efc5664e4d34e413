"""`adkd data synth` and `adkd data validate` as a user runs them: the installed command, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_process import run_adkd

REPO = Path(__file__).resolve().parents[2]
BOTTLE_ROOT = REPO / ".." / "shared" / "data" / "mvtec_ad_256"
needs_bottle = pytest.mark.skipif(
    not (BOTTLE_ROOT / "bottle" / "train" / "good").is_dir(), reason="shared MVTec AD bottle data not present"
)
pytestmark = pytest.mark.integration


def adkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_adkd(args, cwd=cwd, timeout=600)


def test_synth_then_validate_passes(tmp_path: Path) -> None:
    made = adkd("data", "synth", str(tmp_path / "s"), "--categories", "weave,disc,chip", "--train", "8",
                "--test", "8", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["chip", "disc", "weave"]
    checked = adkd("data", "validate", str(tmp_path / "s"), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data valid" in checked.stdout and "FAIL" not in checked.stdout
    report = json.loads((tmp_path / "report" / "validation_report.json").read_text())
    assert report["success"] and report["n_files"] == 3 * (8 + 8) + 18  # images + masks
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()


@needs_bottle
def test_real_bottle_passes(tmp_path: Path) -> None:
    checked = adkd("data", "validate", str(BOTTLE_ROOT), "--category", "bottle", "--out", str(tmp_path / "r"),
                   cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    facts = json.loads((tmp_path / "r" / "validation_report.json").read_text())["category_facts"][0]
    assert facts == {
        "category": "bottle", "n_train_good": 209, "n_test_good": 20, "n_test_defective": 63,
        "has_ground_truth": True, "image_level": False, "n_sizes": 1, "sizes": "256x256", "size_range": "256x256",
        "most_common_size": "256x256", "size_summary": "1 size, 256x256", "n_modes": 1, "modes": "RGB",
    }  # fmt: skip


def _bottle_subset(dst: Path) -> Path:
    """A few files of each bottle folder, copied (the shared data stays untouched)."""
    src = BOTTLE_ROOT / "bottle"
    for folder in ("train/good", "test/good", "test/broken_large", "test/contamination"):
        (dst / folder).mkdir(parents=True)
        for f in sorted((src / folder).glob("*.png"))[:4]:
            shutil.copy(f, dst / folder / f.name)
            if folder.startswith("test/") and not folder.endswith("good"):
                gt = Path("ground_truth") / folder.split("/")[1]
                (dst / gt).mkdir(parents=True, exist_ok=True)
                shutil.copy(src / gt / f"{f.stem}_mask.png", dst / gt / f"{f.stem}_mask.png")
    return dst


@needs_bottle
def test_broken_bottle_copy_fails_with_exit_2_naming_both_files(tmp_path: Path) -> None:
    bottle = _bottle_subset(tmp_path / "data" / "bottle")
    truncated = bottle / "train" / "good" / "002.png"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (bottle / "ground_truth" / "contamination" / "001_mask.png").unlink()
    checked = adkd("data", "validate", str(tmp_path / "data"), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert checked.returncode == 2
    assert "Traceback" not in checked.stderr + checked.stdout
    err = checked.stderr
    assert err.startswith("error: data validation failed")
    assert f"{truncated} (truncated or corrupt image data" in err
    missing_for = bottle / "test" / "contamination" / "001.png"
    assert f"{missing_for} (missing {bottle / 'ground_truth' / 'contamination' / '001_mask.png'})" in err
    failed = json.loads((tmp_path / "r" / "validation_report.json").read_text())["failed"]
    assert failed == ["decodable", "defect-has-mask"]
    gx = json.loads((tmp_path / "r" / "gx_validation_result.json").read_text())
    assert gx["files"]["success"] is False and gx["categories"]["success"] is True
