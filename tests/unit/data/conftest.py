"""Small synthetic categories, generated once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adkd.pipelines.data.synthetic_dataset import synthesize

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
BOTTLE_ROOT = SHARED / "data" / "mvtec_ad_256"


@pytest.fixture(scope="session")
def synth_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """weave and chip at 32 px: 6 train images, 5 test images (1 good + 4 defective)."""
    root = tmp_path_factory.mktemp("synth-base")
    synthesize(root, ["weave", "chip"], size=32, n_train=6, n_test=5, seed=3)
    return root


@pytest.fixture
def synth_copy(synth_base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth_base, root)
    return root
