import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data import synthetic_dataset as synth
from adkd.pipelines.data.synthetic_dataset import CATEGORIES, render_sample, synthesize


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", ["dots"], size=32, n_train=3, n_test=4, seed=1)
    synthesize(tmp_path / "b", ["dots"], size=32, n_train=3, n_test=4, seed=1)
    synthesize(tmp_path / "c", ["dots"], size=32, n_train=3, n_test=4, seed=2)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_category_does_not_depend_on_the_others(tmp_path: Path) -> None:
    synthesize(tmp_path / "one", ["bolt"], size=32, n_train=2, n_test=3)
    synthesize(tmp_path / "two", ["disc", "bolt"], size=32, n_train=2, n_test=3)
    assert _digest(tmp_path / "one" / "bolt") == _digest(tmp_path / "two" / "bolt")


def test_layout_and_counts(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, None, size=32, n_train=2, n_test=8)
    assert list(summary) == list(CATEGORIES)
    assert len(CATEGORIES) == 6
    # textures: 2 good + 6 defects over 3 kinds; objects: 2 good + 6 over 4 kinds
    assert summary["weave"] == {"train": 2, "test/good": 2, "test/scratch": 2, "test/hole": 2, "test/stain": 2}
    assert summary["chip"] == {
        "train": 2, "test/good": 2, "test/missing_part": 2, "test/extra_part": 2, "test/misplaced": 1,
        "test/scratch": 1,
    }  # fmt: skip
    for category, counts in summary.items():
        for key, n in counts.items():
            folder = tmp_path / category / ("train/good" if key == "train" else key)
            assert len(list(folder.glob("*.png"))) == n
            if key not in ("train", "test/good"):
                defect = key.split("/")[1]
                masks = sorted((tmp_path / category / "ground_truth" / defect).glob("*_mask.png"))
                assert [m.name for m in masks] == [f"{i:03d}_mask.png" for i in range(n)]
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


@pytest.mark.parametrize("category", CATEGORIES)
def test_masks_are_exactly_the_changed_pixels(category: str) -> None:
    kinds = synth.defect_kinds(category)
    for i, kind in enumerate(kinds):
        normal, none = render_sample(category, 64, np.random.default_rng(i))
        image, mask = render_sample(category, 64, np.random.default_rng(i), kind)
        assert none is None and mask is not None
        changed = np.any(image != normal, axis=2)
        assert np.array_equal(mask > 0, changed)
        assert set(np.unique(mask)) == {0, 255}
        # visible: at least 0.3 % of the image (12 px at 64 px), at most a third of it
        assert 12 <= changed.sum() <= 64 * 64 / 3, (kind, changed.sum())


def test_normal_images_vary() -> None:
    images = [render_sample("disc", 64, np.random.default_rng(i))[0].astype(int) for i in range(4)]
    for a, b in itertools.pairwise(images):
        assert np.abs(a - b).mean() > 2


def test_saved_masks_match_saved_images(tmp_path: Path) -> None:
    synthesize(tmp_path, ["grain"], size=48, n_train=1, n_test=4)
    for mask_path in (tmp_path / "grain" / "ground_truth").rglob("*_mask.png"):
        mask = Image.open(mask_path)
        image = Image.open(tmp_path / "grain" / "test" / mask_path.parent.name / mask_path.name.replace("_mask", ""))
        assert mask.mode == "L" and image.mode == "RGB" and mask.size == image.size == (48, 48)
        assert np.asarray(mask).max() == 255


def test_rewrites_a_category_and_refuses_bad_arguments(tmp_path: Path) -> None:
    synthesize(tmp_path, ["dots"], size=32, n_train=4, n_test=4)
    synthesize(tmp_path, ["dots"], size=32, n_train=2, n_test=4)
    assert len(list((tmp_path / "dots" / "train" / "good").iterdir())) == 2
    with pytest.raises(ConfigError, match="unknown synthetic category foo"):
        synthesize(tmp_path, ["foo"])
    with pytest.raises(ConfigError, match="--size 8"):
        synthesize(tmp_path, size=8)
    with pytest.raises(ConfigError, match="--test 1"):
        synthesize(tmp_path, n_test=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        synthesize(tmp_path / "file")
    (tmp_path / "mine" / "disc").mkdir(parents=True)
    with pytest.raises(DataError, match="not a category folder"):
        synthesize(tmp_path / "mine", ["disc"])
