"""The gate's size policy, messages that scale to many files, and image-level categories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adkd.errors import DataError
from adkd.pipelines.data import dataset
from adkd.pipelines.data.validate import SHOWN_OFFENDERS, require_valid, validate_data
from tests.varying_sizes import write_varying_category


@pytest.fixture(scope="module")
def varying(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("varying")
    write_varying_category(root)
    return root


def test_varying_sizes_pass_and_are_summarised(varying: Path) -> None:
    report = validate_data(varying, data_docs=False)
    assert report.success, report.failure_message()
    facts = report.category_table.iloc[0]
    assert facts.n_sizes > 5 and facts.size_range.startswith("39x") and ".." in facts.size_range
    assert facts.size_summary.startswith(f"{facts.n_sizes} sizes, {facts.size_range}; most common ")
    assert facts.sizes.count("x") == 5 and facts.sizes.endswith("…")  # the 5 most common, not all of them
    assert "one-size" not in {o.rule_id for o in report.outcomes}


def test_one_size_refuses_them_with_a_summary(varying: Path) -> None:
    with pytest.raises(DataError) as info:
        require_valid(varying, one_size=True, data_docs=False)
    message = str(info.value)
    assert "(rule one-size): 15 of 17 files fail" in message  # every image not of the most common size
    # 40x97 and 40x104 tie (two files each): the file-level verdict names the category table's choice
    most_common = validate_data(varying, data_docs=False).category_table.iloc[0].most_common_size
    assert most_common == "40x97"
    assert f"the most common size in kolektor is {most_common}" in message and "in kolektor/train/good (8)" in message
    assert "to accept: leave out --one-size" in message


def test_many_failing_files_show_a_count_a_summary_and_ten_of_them(tmp_path: Path, varying: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(varying, root)
    broken = []
    for i in range(25):
        path = root / "kolektor" / "train" / "good" / f"broken_{i:02d}.png"
        path.write_text("not a picture\n")
        broken.append(str(path))
    report = validate_data(root, out_dir=tmp_path / "out", data_docs=False)
    decodable = next(o for o in report.outcomes if o.rule_id == "decodable")
    assert decodable.unexpected == 25 and len(decodable.offenders) == 25  # the report keeps them all
    assert decodable.summary == "in kolektor/train/good (25)"
    lines = report.failure_message().splitlines()
    shown = [line for line in lines if "broken_" in line]
    assert len(shown) == SHOWN_OFFENDERS == 10
    assert all(line.count(".png") == 1 for line in shown)  # one file per line, not a wall
    assert any(line.strip() == "… and 15 more (all in the report files)" for line in lines)
    saved = json.loads((tmp_path / "out" / "validation_report.json").read_text())
    listed = next(e for e in saved["expectations"] if e["rule_id"] == "decodable")["offenders"]
    assert sorted(o.split(" (")[0] for o in listed) == broken


def test_image_level_category_needs_no_masks_and_loads_without_them(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_varying_category(root, masks=False)
    assert not (root / "kolektor" / "ground_truth").exists()
    report = validate_data(root, data_docs=False)
    assert report.success, report.failure_message()
    assert bool(report.category_table.iloc[0].image_level)
    dataset.clear_cache()
    data = dataset.load_category(root, "kolektor", image_size=32, resize="letterbox", val_fraction=0)
    assert not data.has_masks and int(data.test_labels.sum()) == 4 and data.test_masks.sum() == 0


def test_some_masks_missing_is_still_an_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_varying_category(root)
    (root / "kolektor" / "ground_truth" / "crack" / "001_mask.png").unlink()
    report = validate_data(root, data_docs=False)
    assert [o.rule_id for o in report.failed] == ["defect-has-mask"]
    declared = validate_data(root, image_level=True, data_docs=False)  # declared image-level: masks ignored
    assert declared.success and not (declared.files.kind == "mask").any()
    dataset.clear_cache()
    with pytest.raises(DataError, match="has no mask"):
        dataset.load_category(root, "kolektor", image_size=32)
    data = dataset.load_category(root, "kolektor", image_size=32, image_level=True)
    assert not data.has_masks and np.isfinite(data.test.float().numpy()).all()


def test_a_tie_names_the_same_most_common_size_in_both_tables(tmp_path: Path) -> None:
    from PIL import Image

    from adkd.pipelines.data.facts import category_facts, file_facts

    good = tmp_path / "parts" / "train" / "good"
    good.mkdir(parents=True)
    # One image each: "1000x80" sorts before "200x200" as text, (200, 200) before (1000, 80) as sizes.
    for name, (w, h) in (("a.png", (1000, 80)), ("b.png", (200, 200))):
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(good / name)
    files = file_facts(tmp_path, ["parts"])
    table = category_facts(tmp_path, ["parts"], files)
    images = files[files.kind == "image"]
    assert set(images.category_size) == {table.most_common_size.iloc[0]} == {"200x200"}
    assert images.set_index("size").odd_size.to_dict() == {"1000x80": True, "200x200": False}
