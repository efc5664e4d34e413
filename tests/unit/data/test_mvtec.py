from pathlib import Path

import pytest

from adkd.errors import DataError
from adkd.pipelines.data.mvtec import discover_categories, list_items, resolve_categories


def test_discovers_categories_with_train_good(synth_copy: Path) -> None:
    (synth_copy / "notes").mkdir()  # a folder without train/good is not a category
    (synth_copy / "zz" / "train" / "good").mkdir(parents=True)
    assert discover_categories(synth_copy) == ["chip", "weave", "zz"]


def test_items_carry_split_label_defect_and_mask(synth_copy: Path) -> None:
    items = list_items(synth_copy, "weave")
    train = [it for it in items if it.split == "train"]
    test = [it for it in items if it.split == "test"]
    assert len(train) == 6 and all(it.label == 0 and it.defect == "good" and it.mask_path is None for it in train)
    assert [it.image_path.name for it in train] == [f"{i:03d}.png" for i in range(6)]
    assert sorted(it.defect for it in test) == ["good", "hole", "scratch", "scratch", "stain"]
    for it in test:
        if it.label:
            assert it.mask_path == synth_copy / "weave" / "ground_truth" / it.defect / f"{it.image_path.stem}_mask.png"
        else:
            assert it.defect == "good" and it.mask_path is None


def test_root_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        discover_categories(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        discover_categories(tmp_path / "f.txt")
    with pytest.raises(DataError, match="no category under"):
        discover_categories(tmp_path)


def test_category_root_hint_and_unknown_category(synth_copy: Path) -> None:
    with pytest.raises(DataError, match="pass its parent"):
        discover_categories(synth_copy / "weave")
    with pytest.raises(DataError, match=r"category bottle not found .* available are chip, weave"):
        resolve_categories(synth_copy, ["bottle"])
