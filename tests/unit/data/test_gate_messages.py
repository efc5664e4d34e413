"""Gate refusals say how many files fail, show at most ten, name the one switch that accepts them, and put
--skip-validation last; RGB files with three equal channels among grayscale ones pass by default."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import DataError
from adkd.pipelines.data import dataset
from adkd.pipelines.data.images import read_rgb
from adkd.pipelines.data.validate import require_valid, validate_data

SIZE = 24


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _grey(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def _category(root: Path, n_train: int = 20, rgb: str | None = None, n_rgb: int = 0) -> Path:
    """A grayscale category (train, one good and one defective test image with its mask); the last ``n_rgb``
    training images saved as RGB: ``gray`` (three equal channels) or ``colour``."""
    rng = np.random.default_rng(0)
    cat = root / "pcb"
    for i in range(n_train):
        grey = _grey(rng)
        if i >= n_train - n_rgb and rgb == "gray":
            image = np.repeat(grey[..., None], 3, axis=2)
        elif i >= n_train - n_rgb:
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        else:
            image = grey
        _png(cat / "train" / "good" / f"{i:03d}.png", image)
    _png(cat / "test" / "good" / "000.png", _grey(rng))
    _png(cat / "test" / "hole" / "000.png", _grey(rng))
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[5:9, 5:9] = 255
    _png(cat / "ground_truth" / "hole" / "000_mask.png", mask)
    return root


def test_gray_rgb_gives_the_model_the_same_pixels_as_its_grayscale_twin(tmp_path: Path) -> None:
    """The evidence for passing gray RGB files: the reader makes RGB of L by repeating its channel."""
    grey = _grey(np.random.default_rng(1))
    as_l = read_rgb(_png(tmp_path / "l.png", grey))
    as_rgb = read_rgb(_png(tmp_path / "rgb.png", np.repeat(grey[..., None], 3, axis=2)))
    assert as_l.shape == (SIZE, SIZE, 3) and np.array_equal(as_l, as_rgb)
    assert np.array_equal(read_rgb(tmp_path / "l.png", 16), read_rgb(tmp_path / "rgb.png", 16))  # resized too


def test_gray_rgb_among_grayscale_passes_by_default(tmp_path: Path) -> None:
    root = _category(tmp_path / "data", rgb="gray", n_rgb=3)
    report = validate_data(root)
    assert report.success, report.failure_message()
    facts = report.category_table.to_dict(orient="records")[0]
    assert facts["n_modes"] == 1 and facts["modes"] == "L, RGB (3 RGB with equal channels)"
    dataset.clear_cache()
    assert len(dataset.load_category(root, "pcb", image_size=SIZE).train) == 16  # 20 minus the held-out 4


def test_grey_rgb_photos_among_colour_ones_pass_and_l_files_among_them_do_not(tmp_path: Path) -> None:
    """CIFAR-10's case: a colour category holding a few grey photographs, stored as RGB like the rest."""
    rng = np.random.default_rng(2)
    root = tmp_path / "data"
    for i in range(12):
        grey = _grey(rng)
        image = np.repeat(grey[..., None], 3, axis=2) if i < 2 else rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
        _png(root / "car" / "train" / "good" / f"{i:03d}.png", image)
    _png(root / "car" / "test" / "good" / "000.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    _png(root / "car" / "test" / "anomaly" / "000.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    report = validate_data(root, image_level=True, data_docs=False)
    assert report.success, report.failure_message()
    _png(root / "car" / "train" / "good" / "100.png", _grey(rng))  # an L file: another capture, refused
    with pytest.raises(DataError, match=r"\(rule one-mode\): 1 of 15 files fail"):
        require_valid(root, image_level=True, data_docs=False)


def test_mixed_modes_refusal_counts_shows_ten_names_its_flag_then_skip(tmp_path: Path) -> None:
    root = _category(tmp_path / "data", n_train=30, rgb="colour", n_rgb=12)
    with pytest.raises(DataError) as info:
        require_valid(root)
    message = str(info.value)
    assert "(rule one-mode): 12 of 32 files fail" in message
    listed = [line for line in message.splitlines() if "(mode RGB; the most common mode in pcb is L)" in line]
    assert len(listed) == 10 and "… and 2 more" in message
    shown = str(root / "pcb/train/good/018.png")  # the first colour file; the last two only in the report files
    assert shown in message and str(root / "pcb/train/good/029.png") not in message
    lines = message.splitlines()
    accept = next(i for i, line in enumerate(lines) if "--allow-mixed-modes" in line)
    assert lines[accept].strip().startswith("to accept: --allow-mixed-modes")
    assert "--skip-validation" in lines[-1] and accept < len(lines) - 1
    assert require_valid(root, allow_mixed_modes=True).success


def test_missing_mask_names_image_level_and_one_size_names_its_flag(tmp_path: Path) -> None:
    root = _category(tmp_path / "data")
    (root / "pcb" / "ground_truth" / "hole" / "000_mask.png").unlink()
    _png(root / "pcb" / "train" / "good" / "odd.png", np.zeros((SIZE + 8, SIZE), dtype=np.uint8))
    report = validate_data(root, one_size=True)
    by_rule = {o.rule_id: o for o in report.failed}
    assert set(by_rule) == {"defect-has-mask", "one-size"}
    assert by_rule["defect-has-mask"].unexpected == 1 and "--image-level" in by_rule["defect-has-mask"].line()
    size = by_rule["one-size"]
    assert (
        size.unexpected == 1 and f"{SIZE}x{SIZE + 8}; the most common size in pcb is {SIZE}x{SIZE}" in size.offenders[0]
    )
    assert "to accept: leave out --one-size" in size.line()
    assert validate_data(root, image_level=True).success  # the named switches accept exactly these
    assert "no switch accepts this" in _truncated(tmp_path).failed[0].line()


def test_empty_category_folders_are_refused_by_the_rules_not_a_crash(tmp_path: Path) -> None:
    """Folders without a file: the count rules fail, each said plainly, and none names a switch it cannot be."""
    (tmp_path / "data" / "pcb" / "train" / "good").mkdir(parents=True)
    report = validate_data(tmp_path / "data", min_train=1)
    by_rule = {o.rule_id: o for o in report.failed}
    assert set(by_rule) == {"files-present", "train-min-count", "test-has-good", "test-has-defects"}
    assert by_rule["files-present"].lines()[0] == "the data set holds files (rule files-present): 0 files"
    assert by_rule["train-min-count"].lines() == [
        "train/good holds at least 1 image(s) (rule train-min-count): 1 of 1 categories fail",
        "    pcb (0 images)",
        "    no switch accepts this: fix these files",  # --min-train is 1 already
    ]
    _png(tmp_path / "data" / "pcb" / "train" / "good" / "000.png", _grey(np.random.default_rng(0)))
    lower = validate_data(tmp_path / "data", min_train=2).failed
    assert "to accept: a lower --min-train" in next(o for o in lower if o.rule_id == "train-min-count").line()


def _truncated(tmp_path: Path):
    root = _category(tmp_path / "broken")
    path = root / "pcb" / "train" / "good" / "000.png"
    path.write_bytes(path.read_bytes()[:40])
    return validate_data(root)


def test_cli_refusal_names_the_flag_and_count(tmp_path: Path, monkeypatch, capsys) -> None:
    from adkd.cli.main import run

    root = _category(tmp_path / "data", rgb="colour", n_rgb=2)
    monkeypatch.setattr(sys, "argv", ["adkd", "data", "validate", str(root), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as info:
        run()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "2 of 22 files fail" in err and "--allow-mixed-modes" in err
    assert err.rstrip().splitlines()[-1].strip().startswith("or skip every rule")
