"""The MVTec AD folder layout: which categories a root holds and which files each category has.

Layout: ``ROOT/CAT/train/good/*``, ``ROOT/CAT/test/<defect>/*``,
``ROOT/CAT/ground_truth/<defect>/<stem>_mask.png``. Any folder with ``train/good`` is a category.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from adkd.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class Item:
    """One image of a category; ``mask_path`` is None for good images and for defects without a mask."""

    category: str
    split: str  # "train" or "test"
    label: int  # 0 good, 1 defective
    defect: str  # "good" or the defect folder name
    image_path: Path
    mask_path: Path | None


def natural_key(name: str) -> tuple:
    """Sort key that puts ``2.png`` before ``10.png``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def check_root(root: str | Path) -> Path:
    """Return ``root`` as a Path, or raise DataError if it is missing or not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(
            f"data root {path} does not exist: pass the folder that holds the category folders "
            "(e.g. ROOT/bottle/train/good), or create one with `adkd data synth ROOT`"
        )
    if not path.is_dir():
        raise DataError(f"data root {path} is a file, not a folder: pass the folder that holds the category folders")
    return path


def is_category(path: Path) -> bool:
    return (path / "train" / GOOD).is_dir()


def discover_categories(root: str | Path) -> list[str]:
    """Names of the folders under ``root`` that hold ``train/good``, sorted."""
    path = check_root(root)
    names = sorted((p.name for p in path.iterdir() if p.is_dir() and is_category(p)), key=natural_key)
    if not names:
        hint = f"; {path} itself is a category, pass its parent {path.parent}" if is_category(path) else ""
        raise DataError(f"no category under {path}: expected ROOT/<category>/train/good{hint}")
    return names


def resolve_categories(root: str | Path, categories: list[str] | None) -> list[str]:
    """The requested categories (all when None), each checked to exist under ``root``."""
    found = discover_categories(root)
    if not categories:
        return found
    missing = [c for c in categories if c not in found]
    if missing:
        raise DataError(f"category {', '.join(missing)} not found under {Path(root)}: available are {', '.join(found)}")
    return list(dict.fromkeys(categories))


def is_image_level(category_dir: Path, declared: bool = False) -> bool:
    """A category without ground_truth/ (or one declared so) is image-level: image labels only, no masks."""
    return declared or not (category_dir / "ground_truth").is_dir()


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Image-named entries of ``folder`` (files or not, e.g. a broken link), naturally sorted."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name))


def mask_candidates(category_dir: Path, defect: str, image_path: Path) -> list[Path]:
    """Where the mask of a test image may be, most usual first."""
    folder = category_dir / "ground_truth" / defect
    stem = image_path.stem
    return [folder / f"{stem}{MASK_SUFFIX}.png", folder / f"{stem}.png"]


def find_mask(category_dir: Path, defect: str, image_path: Path) -> Path | None:
    for candidate in mask_candidates(category_dir, defect, image_path):
        if candidate.is_file():
            return candidate
    return None


def list_items(root: str | Path, category: str, image_level: bool = False) -> list[Item]:
    """Every image of ``category``: train/good first, then test folders in name order.

    In an image-level category (``image_level`` or no ground_truth/) no mask is looked up.
    """
    cat_dir = check_root(root) / category
    image_level = is_image_level(cat_dir, image_level)
    if not is_category(cat_dir):
        raise DataError(f"{cat_dir} is not a category: it has no train/good folder")
    items = [Item(category, "train", 0, GOOD, p, None) for p in image_files(cat_dir / "train" / GOOD)]
    test_dir = cat_dir / "test"
    defects = sorted((p.name for p in test_dir.iterdir() if p.is_dir()), key=natural_key) if test_dir.is_dir() else []
    for defect in defects:
        label = 0 if defect == GOOD else 1
        for p in image_files(test_dir / defect):
            mask = None if label == 0 or image_level else find_mask(cat_dir, defect, p)
            items.append(Item(category, "test", label, defect, p, mask))
    return items
