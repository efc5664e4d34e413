"""A table of per-file facts about a data root, computed without ever letting a bad file raise.

One row per entry under ``CAT/{train,test,ground_truth}/<folder>/``: images, masks and anything
unexpected. A second table holds one row per category (counts, sizes, modes). Hidden files
(names starting with ".") are ignored, as are files beside the split folders (licence, readme).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from adkd.pipelines.data.images import ImageReadError, decode_workers, open_image
from adkd.pipelines.data.mvtec import GOOD, MASK_SUFFIX, find_mask, is_image_file, is_image_level, natural_key
from adkd.pipelines.data.sizes import most_common, size_counts, size_range
from adkd.pipelines.data.sizes import summary as size_summary

SPLITS = ("train", "test", "ground_truth")


@dataclass
class FileFacts:
    category: str
    split: str  # train | test | ground_truth
    defect: str  # the folder below the split ("good", a defect name), "" when misplaced
    label: int  # 0 good, 1 defective, -1 for masks and unexpected entries
    kind: str  # image | mask | unexpected
    path: str
    decodable: bool = False
    error: str = ""
    width: int = -1
    height: int = -1
    size: str = ""  # "WxH" when decodable
    mode: str = ""
    content_hash: str = ""
    mask_path: str = ""
    mask_exists: bool = False
    # The three mask checks hold vacuously when there is no decodable mask: a missing or broken
    # mask is reported once, by its own rule, not three times.
    mask_size_matches: bool = True
    mask_values_ok: bool = True
    mask_nonempty: bool = True
    mask_size: str = ""
    mask_values: str = ""
    has_image: bool = True  # for masks: the test image it belongs to exists
    in_train_and_test: bool = False
    image_level: bool = False  # the category has no ground_truth/ (or is declared image-level): no masks
    gray_rgb: bool = False  # an RGB image whose three channels are equal: grayscale content, read as L is
    mode_group: str = ""  # the mode as the model sees it: L for L images and for gray_rgb ones
    odd_mode: bool = False  # its mode group is not its category's most common one
    odd_size: bool = False  # its size is not its category's most common one
    category_mode: str = ""  # the category's most common mode group (images)
    category_size: str = ""  # the category's most common size (images)


def _pixel_hash(img) -> str:
    digest = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def _raw_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _decode_into(row: FileFacts, path: Path):
    """Fill decodability, size, mode and hash of ``row``; return the image or None."""
    try:
        img = open_image(path)
    except ImageReadError as exc:
        row.error = exc.reason
        row.content_hash = _raw_hash(path) if path.is_file() else ""
        return None
    row.decodable, row.width, row.height, row.mode = True, img.width, img.height, img.mode
    row.size = f"{img.width}x{img.height}"
    row.content_hash = _pixel_hash(img)
    if img.mode == "RGB":
        arr = np.asarray(img)
        row.gray_rgb = bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    row.mode_group = "L" if row.gray_rgb else img.mode
    return img


def _mask_facts(row: FileFacts, mask_path: Path) -> None:
    row.mask_path, row.mask_exists = str(mask_path), True
    try:
        mask = open_image(mask_path)
    except ImageReadError:
        return  # the mask's own row reports it
    arr = np.asarray(mask)
    values = np.unique(arr)
    row.mask_size = f"{mask.width}x{mask.height}"
    row.mask_values = ",".join(str(v) for v in values[:6]) + ("…" if values.size > 6 else "")
    if row.decodable:
        row.mask_size_matches = (mask.width, mask.height) == (row.width, row.height)
    row.mask_values_ok = mask.mode in ("L", "1", "P") and (
        set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}
    )
    row.mask_nonempty = bool((arr > 0).any())


def _image_row(row: FileFacts, path: Path, cat_dir: Path) -> FileFacts:
    _decode_into(row, path)
    if row.split == "test" and not row.image_level:
        mask = find_mask(cat_dir, row.defect, path)
        if mask is not None:
            _mask_facts(row, mask)
        elif row.label == 1:
            row.mask_path = str(cat_dir / "ground_truth" / row.defect / f"{path.stem}{MASK_SUFFIX}.png")
    return row


def _mask_row(row: FileFacts, path: Path, cat_dir: Path) -> FileFacts:
    img = _decode_into(row, path)
    if img is not None:
        arr = np.asarray(img)
        row.mask_values = ",".join(str(v) for v in np.unique(arr)[:6])
    stem = path.stem[: -len(MASK_SUFFIX)] if path.stem.endswith(MASK_SUFFIX) else path.stem
    folder = cat_dir / "test" / row.defect
    row.has_image = folder.is_dir() and any(p.stem == stem and is_image_file(p) for p in folder.iterdir())
    return row


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    except OSError:
        return []


def _plan_category(root: Path, category: str, declared_image_level: bool) -> list[tuple[FileFacts, Path]]:
    """Every entry to inspect, with its row pre-filled from its place in the layout."""
    cat_dir = root / category
    image_level = is_image_level(cat_dir, declared_image_level)
    plan: list[tuple[FileFacts, Path]] = []
    for split in SPLITS if not image_level else SPLITS[:2]:
        for entry in _entries(cat_dir / split):
            if not entry.is_dir():
                row = FileFacts(category, split, "", -1, "unexpected", str(entry), error="file outside a folder")
                row.image_level = image_level
                plan.append((row, entry))
                continue
            defect = entry.name
            for path in _entries(entry):
                kind = "unexpected"
                error = ""
                if path.is_dir():
                    error = "folder nested too deep"
                elif not is_image_file(path):
                    error = f"not an image file name (suffix {path.suffix or 'none'!r})"
                else:
                    kind = "mask" if split == "ground_truth" else "image"
                label = -1 if kind != "image" else int(defect != GOOD)
                row = FileFacts(category, split, defect, label, kind, str(path), error=error, image_level=image_level)
                plan.append((row, path))
    return plan


def _inspect(job: tuple[FileFacts, Path], cat_dirs: dict[str, Path]) -> FileFacts:
    row, path = job
    cat_dir = cat_dirs[row.category]
    if row.kind == "image":
        return _image_row(row, path, cat_dir)
    if row.kind == "mask":
        return _mask_row(row, path, cat_dir)
    return row


def _mark_duplicates(df: pd.DataFrame) -> None:
    images = df[(df.kind == "image") & (df.content_hash != "")]
    for _, group in images.groupby("category"):
        train = set(group.content_hash[group.split == "train"])
        test = set(group.content_hash[group.split == "test"])
        both = train & test
        if both:
            df.loc[group.index[group.content_hash.isin(both)], "in_train_and_test"] = True


def _mark_odd(df: pd.DataFrame) -> None:
    """Each image's category's most common mode group and size, and whether the image differs from them.

    An RGB file with three equal channels groups as L (so it passes among L images) and passes among RGB ones too.
    Ties go to the mode that sorts first and to the smallest size (``sizes.most_common``, as the category
    table's ``most_common_size``), so the verdict does not depend on file order.
    """
    images = df[(df.kind == "image") & df.decodable]
    for _, group in images.groupby("category"):
        modes = group.mode_group.value_counts()
        top_mode = sorted(modes.index[modes == modes.max()])[0]
        top_size = most_common(size_counts(zip(group.width, group.height)), 1)[0][0]
        for column, common, odd, top in (
            ("mode_group", "category_mode", "odd_mode", top_mode),
            ("size", "category_size", "odd_size", top_size),
        ):
            df.loc[group.index, common] = top
            df.loc[group.index, odd] = group[column] != top
        # An RGB file with equal channels is an L image's pixels and a colour image's file: odd in neither kind of
        # category (CIFAR-10's automobile class holds 15 grey photos among 1,300 colour ones).
        if top_mode == "RGB":
            df.loc[group.index[group.gray_rgb.to_numpy(dtype=bool)], "odd_mode"] = False


def file_facts(root: Path, categories: list[str], image_level: bool = False) -> pd.DataFrame:
    """The per-file table for ``categories`` under ``root`` (which must exist); ``image_level`` ignores masks."""
    plan = [job for category in categories for job in _plan_category(root, category, image_level)]
    cat_dirs = {c: root / c for c in categories}
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        rows = list(pool.map(lambda job: _inspect(job, cat_dirs), plan))
    columns = list(FileFacts.__dataclass_fields__)
    df = pd.DataFrame([asdict(r) for r in rows], columns=columns)
    _mark_duplicates(df)
    _mark_odd(df)
    return df


def category_facts(root: Path, categories: list[str], files: pd.DataFrame, image_level: bool = False) -> pd.DataFrame:
    """One row per category: image counts, whether ground_truth exists, a summary of sizes, modes."""
    rows = []
    for category in categories:
        sub = files[(files.category == category) & (files.kind == "image")]
        ok = sub[sub.decodable.astype(bool)]  # a bool mask even when empty (an empty object Series picks columns)
        counts = size_counts(zip(ok.width, ok.height))
        modes = sorted(set(ok["mode"]))
        gray = int(ok.gray_rgb.sum())
        rows.append(
            {
                "category": category,
                "n_train_good": int(((sub.split == "train") & (sub.defect == GOOD)).sum()),
                "n_test_good": int(((sub.split == "test") & (sub.label == 0)).sum()),
                "n_test_defective": int(((sub.split == "test") & (sub.label == 1)).sum()),
                "has_ground_truth": (root / category / "ground_truth").is_dir(),
                "image_level": is_image_level(root / category, image_level),
                "n_sizes": len(counts),
                "sizes": ", ".join(s for s, _ in most_common(counts)) + (", …" if len(counts) > 5 else ""),
                "size_range": size_range(counts),
                "most_common_size": most_common(counts, 1)[0][0] if counts else "",
                "size_summary": size_summary(counts),
                "n_modes": len(set(ok.mode_group)),
                "modes": ", ".join(modes) + (f" ({gray} RGB with equal channels)" if gray and len(modes) > 1 else ""),
            }
        )
    return pd.DataFrame(rows)
