import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data import dataset
from adkd.pipelines.data.dataset import load_category, val_indices

from .conftest import BOTTLE_ROOT


@pytest.fixture(autouse=True)
def _fresh_cache():
    dataset.clear_cache()
    yield
    dataset.clear_cache()


def test_shapes_dtypes_and_labels(synth_copy: Path) -> None:
    data = load_category(synth_copy, "weave", image_size=32, val_fraction=0.34, seed=0)
    assert data.train.shape == (4, 3, 32, 32) and data.val.shape == (2, 3, 32, 32)
    assert data.test.shape == (5, 3, 32, 32) and data.test_masks.shape == (5, 1, 32, 32)
    assert data.train.dtype == data.test.dtype == data.test_masks.dtype == torch.uint8
    assert data.test_labels.dtype == torch.int64
    assert data.test_labels.tolist() == [0 if d == "good" else 1 for d in data.test_defects]
    assert sorted(map(str, data.train_paths + data.val_paths)) == sorted(
        str(p) for p in (synth_copy / "weave" / "train" / "good").glob("*.png")
    )
    assert set(torch.unique(data.test_masks).tolist()) == {0, 1}
    # good images carry an empty mask, defective ones a non-empty one
    per_image = data.test_masks.flatten(1).sum(1)
    assert ((per_image > 0) == (data.test_labels == 1)).all()
    assert data.image_size == 32


def test_pixels_and_masks_equal_the_files_at_native_size(synth_copy: Path) -> None:
    data = load_category(synth_copy, "chip", image_size=32)
    for i, path in enumerate(data.test_paths):
        expected = np.asarray(Image.open(path)).transpose(2, 0, 1)
        assert np.array_equal(data.test[i].numpy(), expected)
        if data.test_labels[i]:
            mask_file = path.parents[2] / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
            assert np.array_equal(data.test_masks[i, 0].numpy(), np.asarray(Image.open(mask_file)) // 255)


def test_resize_is_antialiased_and_masks_nearest(tmp_path: Path) -> None:
    root = tmp_path / "d"
    good = root / "c" / "train" / "good"
    good.mkdir(parents=True)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: antialiased shrinking averages them to grey
    Image.fromarray(stripes).save(good / "0.png")
    (root / "c" / "test" / "bad").mkdir(parents=True)
    Image.fromarray(stripes).save(root / "c" / "test" / "bad" / "0.png")
    (root / "c" / "ground_truth" / "bad").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 7  # any value > 0 is a defect
    Image.fromarray(mask).save(root / "c" / "ground_truth" / "bad" / "0_mask.png")
    data = load_category(root, "c", image_size=16, val_fraction=0)
    interior = data.train[..., 1:-1].float()  # the border columns see only one side of the filter
    assert interior.min().item() >= 125 and interior.max().item() <= 130
    m = data.test_masks[0, 0]
    assert m.sum().item() == 64 and m[4:12, 4:12].all() and set(torch.unique(m).tolist()) == {0, 1}


def test_centre_crop(synth_copy: Path) -> None:
    full = load_category(synth_copy, "weave", image_size=32, val_fraction=0)
    crop = load_category(synth_copy, "weave", image_size=32, crop_size=24, val_fraction=0)
    assert crop.train.shape[-2:] == (24, 24)
    assert torch.equal(crop.train, full.train[:, :, 4:28, 4:28])
    assert torch.equal(crop.test_masks, full.test_masks[:, :, 4:28, 4:28])


def test_grayscale_rgba_and_16bit_become_three_8bit_channels(tmp_path: Path) -> None:
    good = tmp_path / "c" / "train" / "good"
    good.mkdir(parents=True)
    gray = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    Image.fromarray(gray).save(good / "0_gray.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 10)])).save(good / "1_rgba.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(good / "2_16bit.png")
    assert [Image.open(p).mode for p in sorted(good.iterdir())] == ["L", "RGBA", "I;16"]
    data = load_category(tmp_path, "c", image_size=32, val_fraction=0)
    assert data.train.shape == (3, 3, 32, 32)
    for i in range(3):
        for c in range(3):
            assert np.array_equal(data.train[i, c].numpy(), gray), (i, c)


def test_val_split_is_deterministic_and_configurable() -> None:
    a, b, c = val_indices(100, 0.2, 0), val_indices(100, 0.2, 0), val_indices(100, 0.2, 1)
    assert len(a) == 20 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0)
    assert len(val_indices(100, 0.0, 0)) == 0
    assert len(val_indices(1, 0.5, 0)) == 0  # the only image stays in train
    assert len(val_indices(3, 0.9, 0)) == 2


def test_val_fraction_zero_keeps_every_train_image(synth_copy: Path) -> None:
    data = load_category(synth_copy, "weave", image_size=32, val_fraction=0)
    assert data.train.shape[0] == 6 and data.val.shape == (0, 3, 32, 32) and data.val_paths == []


def test_cached_once_per_process(synth_copy: Path) -> None:
    t0 = time.perf_counter()
    first = load_category(synth_copy, "weave", image_size=32, seed=5)
    t1 = time.perf_counter()
    # the files are gone, yet the same data comes back: nothing is read again
    for png in (synth_copy / "weave").rglob("*.png"):
        png.unlink()
    again = load_category(synth_copy, "weave", image_size=32, seed=5)
    t2 = time.perf_counter()
    assert again is first and (t2 - t1) < (t1 - t0)
    other_split = load_category(synth_copy, "weave", image_size=32, seed=6)
    assert other_split.test is first.test and other_split.val_paths != first.val_paths
    dataset.clear_cache()
    with pytest.raises(DataError, match="holds no images"):
        load_category(synth_copy, "weave", image_size=32, seed=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 4}, "image_size=4"),
        ({"image_size": 32, "crop_size": 40}, "crop_size=40"),
        ({"image_size": 32, "val_fraction": 1.0}, "val_fraction=1.0"),
        ({"image_size": 32, "val_fraction": -0.1}, "val_fraction=-0.1"),
    ],
)
def test_bad_arguments(synth_copy: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_category(synth_copy, "weave", **kwargs)


def test_broken_files_raise_data_errors_naming_them(synth_copy: Path) -> None:
    bad = synth_copy / "weave" / "train" / "good" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"002\.png: truncated or corrupt"):
        load_category(synth_copy, "weave", image_size=32)
    mask = synth_copy / "chip" / "ground_truth" / "scratch" / "000_mask.png"
    mask.unlink()
    with pytest.raises(DataError, match=r"test/scratch/000\.png has no mask: add chip/ground_truth/scratch/000_mask"):
        load_category(synth_copy, "chip", image_size=32)


@pytest.mark.skipif(not (BOTTLE_ROOT / "bottle").is_dir(), reason="shared MVTec AD bottle data not present")
def test_real_bottle_category() -> None:
    data = load_category(BOTTLE_ROOT, "bottle", image_size=64)
    assert data.train.shape[0] + data.val.shape[0] == 209 and data.val.shape[0] == 42
    assert data.test.shape == (83, 3, 64, 64) and int(data.test_labels.sum()) == 63
    assert sorted(set(data.test_defects)) == ["broken_large", "broken_small", "contamination", "good"]
    assert all(data.test_masks[data.test_labels == 1].flatten(1).sum(1) > 0)
