"""`adkd data import folder`: plain folders in, an MVTec-layout category out, and back to the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data import dataset
from adkd.pipelines.data.import_folder import import_folder, parse_defects
from adkd.pipelines.data.mvtec import list_items
from tests.varying_sizes import write_varying_category


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """good/, crack/ and masks/ as a user might have them (mask names: <stem>_mask.png)."""
    cat = write_varying_category(tmp_path / "src", n_train=8, n_good=2, n_bad=4)
    out = tmp_path / "plain"
    for sub in ("good", "crack", "masks"):
        (out / sub).mkdir(parents=True)
    for p in [*(cat / "train" / "good").iterdir(), *(cat / "test" / "good").iterdir()]:
        (out / "good" / f"{p.parent.parent.name}_{p.name}").write_bytes(p.read_bytes())
    for p in (cat / "test" / "crack").iterdir():
        (out / "crack" / f"c{p.name}").write_bytes(p.read_bytes())
    for p in (cat / "ground_truth" / "crack").iterdir():
        (out / "masks" / f"c{p.name}").write_bytes(p.read_bytes())
    return out


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_round_trip_with_masks(plain: Path, tmp_path: Path, mode: str) -> None:
    root = tmp_path / "data"
    summary = import_folder(
        root, "parts", plain / "good", {"crack": plain / "crack"}, masks=plain / "masks", test_fraction=0.2, seed=3,
        mode=mode,
    )  # fmt: skip
    assert summary.counts == {"train/good": 8, "test/good": 2, "test/crack": 4, "ground_truth/crack": 4}
    items = list_items(root, "parts")
    good_sources = sorted(p.name for p in (plain / "good").iterdir())
    assert sorted(it.image_path.name for it in items if it.defect == "good") == good_sources  # every file, once
    for it in items:
        assert it.image_path.is_symlink() == (mode == "link")
        src = plain / ("good" if it.defect == "good" else "crack") / it.image_path.name
        assert np.array_equal(_pixels(it.image_path), _pixels(src))
        if it.label:
            assert np.array_equal(_pixels(it.mask_path), _pixels(plain / "masks" / f"{src.stem}_mask.png"))
    again = import_folder(
        tmp_path / "again", "parts", plain / "good", {"crack": plain / "crack"}, test_fraction=0.2, seed=3
    )
    assert sorted(p.name for p in (again.category_dir / "test" / "good").iterdir()) == sorted(
        p.name for p in (root / "parts" / "test" / "good").iterdir()
    )  # the seed decides the split
    dataset.clear_cache()
    assert dataset.load_category(again.category_dir.parent, "parts", 32, val_fraction=0).has_masks is False


def test_test_good_folder_and_errors(plain: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    test_good = tmp_path / "tg"
    test_good.mkdir()
    first = sorted((plain / "good").iterdir())[0]
    (test_good / first.name).write_bytes(first.read_bytes())
    summary = import_folder(root, "a", plain / "good", {"crack": plain / "crack"}, test_good=test_good)
    assert summary.counts["train/good"] == 10 and summary.counts["test/good"] == 1
    with pytest.raises(DataError, match="already exists; pass --force"):
        import_folder(root, "a", plain / "good", {"crack": plain / "crack"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"--defect crack folder {empty} holds no image"):
        import_folder(root, "b", plain / "good", {"crack": empty})
    (plain / "masks" / "stray_mask.png").write_bytes((plain / "masks" / "c000_mask.png").read_bytes())
    with pytest.raises(DataError, match=r"1 of 5 masks in .* match no defect image by name .*: stray_mask\.png"):
        import_folder(root, "c", plain / "good", {"crack": plain / "crack"}, masks=plain / "masks")
    (plain / "masks" / "stray_mask.png").unlink()
    (plain / "masks" / "c002_mask.png").unlink()
    with pytest.raises(DataError, match=r"1 defect image\(s\) have no mask .*: c002\.png"):
        import_folder(root, "d", plain / "good", {"crack": plain / "crack"}, masks=plain / "masks")
    assert not (root / "b").exists() and not (root / "c").exists() and not (root / "d").exists()
    with pytest.raises(ConfigError, match="use NAME=DIR"):
        parse_defects(["crack"])
    with pytest.raises(ConfigError, match="other than 'good'"):
        parse_defects(["good=x"])
