"""Build an MVTec-layout category from plain folders: good images, defect folders, optional masks.

``good`` is split into train/good and test/good by a seeded fraction (or ``test_good`` gives the
test images); each ``defects`` folder becomes ``test/<name>``; masks are matched to defect images by
file stem (``<stem>.png`` or ``<stem>_mask.png``) and written as ``ground_truth/<name>/<stem>_mask.png``.
Without masks the category is image-level (no ground_truth/). Files are linked (default) or copied.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.mvtec import GOOD, MASK_SUFFIX, image_files

SHOWN = 10  # a message about many files shows at most this many
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ImportSummary:
    """What went where: destination folder (relative to the category) -> number of files, and from where."""

    category_dir: Path
    mode: str
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _listing(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOWN])
    return shown + (f" … and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist or is not a folder")
    files = [p for p in image_files(folder) if p.is_file()]
    if not files:
        raise DataError(f"{what} folder {folder} holds no image (.png, .jpg, .bmp, .tif); pass a folder of images")
    return files


def parse_defects(values: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` strings -> {name: folder}; names must be plain folder names other than 'good'."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        name = name.strip()
        if not sep or not name or not folder.strip():
            raise ConfigError(f"--defect {value!r}: use NAME=DIR, e.g. --defect scratch=photos/scratched")
        if name == GOOD or not _NAME.match(name):
            raise ConfigError(f"--defect {value!r}: the name must be a plain folder name other than 'good'")
        if name in out:
            raise ConfigError(f"--defect {name} is given twice; pass each defect name once")
        out[name] = Path(folder.strip()).expanduser()
    return out


def split_good(files: list[Path], test_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, test): a seeded random ``test_fraction`` of ``files`` (at least one each) goes to test."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction {test_fraction}: use a fraction in (0, 1), e.g. 0.2")
    if len(files) < 2:
        raise DataError(f"the good folder holds {len(files)} image: need at least 2 to split train/test")
    n_test = min(len(files) - 1, max(1, round(len(files) * test_fraction)))
    picked = set(np.random.default_rng(seed).permutation(len(files))[:n_test].tolist())
    train = [f for i, f in enumerate(files) if i not in picked]
    test = [f for i, f in enumerate(files) if i in picked]
    return train, test


def _mask_stem(path: Path) -> str:
    return path.stem[: -len(MASK_SUFFIX)] if path.stem.endswith(MASK_SUFFIX) else path.stem


def match_masks(defects: dict[str, list[Path]], masks_dir: Path) -> dict[Path, Path]:
    """{defect image: mask} by file stem; every mask must match one image and every image one mask."""
    masks = _images(masks_dir, "--masks")
    by_stem: dict[str, list[Path]] = {}
    for files in defects.values():
        for f in files:
            by_stem.setdefault(f.stem, []).append(f)
    ambiguous = sorted(stem for stem, files in by_stem.items() if len(files) > 1)
    if ambiguous:
        raise DataError(
            f"{len(ambiguous)} defect image name(s) occur in several defect folders, so masks cannot be matched "
            f"by name: {', '.join(ambiguous[:SHOWN])}; rename them"
        )
    matched: dict[Path, Path] = {}
    unmatched = []
    for mask in masks:
        image = by_stem.get(_mask_stem(mask), [None])[0]
        if image is None:
            unmatched.append(mask)
        elif image in matched:
            raise DataError(f"image {image} has two masks in {masks_dir}: {matched[image].name} and {mask.name}")
        else:
            matched[image] = mask
    if unmatched:
        raise DataError(
            f"{len(unmatched)} of {len(masks)} masks in {masks_dir} match no defect image by name "
            f"(<stem>.png or <stem>_mask.png): {_listing(unmatched)}"
        )
    missing = [f for files in defects.values() for f in files if f not in matched]
    if missing:
        raise DataError(
            f"{len(missing)} defect image(s) have no mask in {masks_dir}: {_listing(missing)}; add their masks "
            "or import without --masks (image-level)"
        )
    return matched


def _place(src: Path, dest: Path, mode: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        dest.symlink_to(src.resolve())
    else:
        shutil.copy2(src, dest)


def _place_mask(src: Path, dest: Path, mode: str) -> None:
    if src.suffix.lower() == ".png":
        _place(src, dest, mode)
        return
    from PIL import Image  # another format: the layout wants PNG masks, so convert

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img.save(dest, format="PNG")


def import_folder(
    root: str | Path,
    category: str,
    good: Path,
    defects: dict[str, Path],
    *,
    test_good: Path | None = None,
    masks: Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    mode: str = "link",
    force: bool = False,
) -> ImportSummary:
    """Write ``root/category`` in the MVTec layout from plain folders; checks everything before writing."""
    if mode not in ("link", "copy"):
        raise ConfigError(f"mode {mode!r}: use link or copy")
    if not _NAME.match(category):
        raise ConfigError(f"category {category!r}: use a plain folder name (letters, digits, _ . -)")
    if not defects:
        raise ConfigError("no --defect given: pass at least one NAME=DIR folder of defective images")
    good_files = _images(Path(good), "--good")
    if test_good is not None:
        train, test = good_files, _images(Path(test_good), "--test-good")
    else:
        train, test = split_good(good_files, test_fraction, seed)
    defect_files = {name: _images(folder, f"--defect {name}") for name, folder in defects.items()}
    matched = match_masks(defect_files, Path(masks)) if masks is not None else {}
    cat_dir = Path(root).expanduser() / category
    if cat_dir.exists():
        if not force:
            raise DataError(f"{cat_dir} already exists; pass --force to replace it, or choose another --category")
        shutil.rmtree(cat_dir)
    summary = ImportSummary(cat_dir, mode)
    plan = [("train/good", train, str(good)), ("test/good", test, str(test_good or good))]
    plan += [(f"test/{name}", files, str(defects[name])) for name, files in defect_files.items()]
    for folder, files, source in plan:
        for f in files:
            _place(f, cat_dir / folder / f.name, mode)
        summary.counts[folder] = len(files)
        summary.sources[folder] = source
    for name, files in defect_files.items():
        for f in files:
            if f in matched:
                _place_mask(matched[f], cat_dir / "ground_truth" / name / f"{f.stem}{MASK_SUFFIX}.png", mode)
        if matched:
            summary.counts[f"ground_truth/{name}"] = len(files)
            summary.sources[f"ground_truth/{name}"] = str(masks)
    return summary
