"""A category decoded once per process into uint8 tensors, so epochs never touch PNG decoding."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.images import decode_workers, read_mask, read_rgb
from adkd.pipelines.data.mvtec import Item, is_image_level, list_items


@dataclass(frozen=True)
class CategoryData:
    """Decoded images of one category. Tensors are shared by the cache: do not modify them in place."""

    category: str
    train: torch.Tensor  # uint8 [N, 3, H, W]
    val: torch.Tensor  # uint8 [V, 3, H, W], carved from train/good
    test: torch.Tensor  # uint8 [K, 3, H, W]
    test_masks: torch.Tensor  # uint8 [K, 1, H, W] in {0, 1}
    test_labels: torch.Tensor  # int64 [K], 1 = defective
    test_defects: list[str]
    test_paths: list[Path]
    train_paths: list[Path]
    val_paths: list[Path]
    has_masks: bool = True  # False for an image-level category: test_masks are all zero, no pixel metrics

    @property
    def image_size(self) -> int:
        return int(self.train.shape[-1])


@dataclass(frozen=True)
class _Decoded:
    """Every image of a category at one size; the val split is carved from it afterwards."""

    good: torch.Tensor
    good_paths: list[Path]
    test: torch.Tensor
    test_masks: torch.Tensor
    test_labels: torch.Tensor
    test_defects: list[str]
    test_paths: list[Path]
    has_masks: bool


_decoded_cache: dict[tuple, _Decoded] = {}
_split_cache: dict[tuple, CategoryData] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every decoded category (e.g. after the files changed on disk)."""
    with _lock:
        _decoded_cache.clear()
        _split_cache.clear()


def _stack(arrays: list[np.ndarray], size: int | tuple[int, int], channels: int) -> torch.Tensor:
    if not arrays:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.zeros((0, channels, h, w), dtype=torch.uint8)
    batch = np.stack(arrays)
    if batch.ndim == 3:
        batch = batch[..., None]
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _decode_item(
    item: Item, size: int | None, crop: int | None, resize: str, image_level: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    image = read_rgb(item.image_path, size, crop, resize)
    if item.label == 0 or image_level:
        return image, None
    if item.mask_path is None:
        raise DataError(
            f"defective test image {item.image_path} has no mask: add "
            f"{item.category}/ground_truth/{item.defect}/{item.image_path.stem}_mask.png"
        )
    mask = read_mask(item.mask_path, size, crop, resize)
    return image, mask


def _one_size(decoded: list[tuple[np.ndarray, np.ndarray | None]], items: list[Item], category: str) -> tuple[int, int]:
    """(height, width) shared by every image decoded at its own size; a ConfigError naming the setting if not."""
    from adkd.pipelines.data.sizes import size_counts, summary

    counts = size_counts((img.shape[1], img.shape[0]) for img, _ in decoded)
    if len(counts) > 1:
        raise ConfigError(
            f"category '{category}' ({items[0].image_path.parents[2]}) has images of {summary(counts)}: "
            "tiling at the images' own resolution needs one size; set tiling.image_size to bring them to one "
            "square first"
        )
    (w, h), _ = next(iter(counts.items()))
    return h, w


def _decode(root: Path, category: str, size: int | None, crop: int | None, resize: str, image_level: bool) -> _Decoded:
    image_level = is_image_level(root / category, image_level)
    items = list_items(root, category, image_level)
    train_items = [it for it in items if it.split == "train"]
    test_items = [it for it in items if it.split == "test"]
    if not train_items:
        raise DataError(f"{root / category / 'train' / 'good'} holds no images: add normal training images")
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        decoded = list(pool.map(lambda it: _decode_item(it, size, crop, resize, image_level), items))
    # size None: every image at its own resolution (tiling); they must share one size to stack.
    out = (crop or size) if size is not None else _one_size(decoded, items, category)
    out_hw = (out, out) if isinstance(out, int) else out
    train_arrays = [img for (img, _), it in zip(decoded, items) if it.split == "train"]
    test_pairs = [pair for pair, it in zip(decoded, items) if it.split == "test"]
    zero_mask = np.zeros(out_hw, dtype=np.uint8)
    return _Decoded(
        good=_stack(train_arrays, out, 3),
        good_paths=[it.image_path for it in train_items],
        test=_stack([img for img, _ in test_pairs], out, 3),
        test_masks=_stack([zero_mask if m is None else m for _, m in test_pairs], out, 1),
        test_labels=torch.tensor([it.label for it in test_items], dtype=torch.int64),
        test_defects=[it.defect for it in test_items],
        test_paths=[it.image_path for it in test_items],
        has_masks=not image_level,
    )


def val_indices(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the images held out for validation; at least one image stays in train."""
    if n <= 1 or val_fraction == 0:
        return np.zeros(0, dtype=np.int64)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_val])


def _check_args(image_size: int | None, crop_size: int | None, val_fraction: float) -> None:
    if image_size is None:
        if crop_size is not None:
            raise ConfigError("crop_size needs image_size: images kept at their own size are not cropped")
    elif not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size={image_size!r} is invalid: use an integer of at least 8 (e.g. 256)")
    if crop_size is not None and image_size is not None and not 8 <= crop_size <= image_size:
        raise ConfigError(f"crop_size={crop_size!r} is invalid: use an integer in [8, image_size={image_size}]")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction!r} is invalid: use a fraction in [0, 1), e.g. 0.2")


def load_category(
    root: str | Path,
    category: str,
    image_size: int | None,
    crop_size: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    resize: str = "stretch",
    image_level: bool = False,
) -> CategoryData:
    """Decode, resize (antialiased; masks nearest) and optionally centre-crop a category, once per process.

    ``resize`` (stretch, letterbox, center-crop) decides how any image size becomes the square; an
    ``image_level`` category (or one without ground_truth/) has no masks. ``image_size=None`` keeps every
    image and mask at its own resolution (tiled training); the category's images must then share one size.
    """
    _check_args(image_size, crop_size, val_fraction)
    root = Path(root).expanduser().resolve()
    decoded_key = (str(root), category, image_size, crop_size, resize, bool(image_level))
    split_key = (*decoded_key, float(val_fraction), seed)
    with _lock:
        if split_key in _split_cache:
            return _split_cache[split_key]
        decoded = _decoded_cache.get(decoded_key)
    if decoded is None:
        decoded = _decode(root, category, image_size, crop_size, resize, image_level)
        with _lock:
            decoded = _decoded_cache.setdefault(decoded_key, decoded)
    held = val_indices(len(decoded.good_paths), val_fraction, seed)
    keep = np.setdiff1d(np.arange(len(decoded.good_paths)), held)
    data = CategoryData(
        category=category,
        train=decoded.good[torch.from_numpy(keep)],
        val=decoded.good[torch.from_numpy(held)],
        test=decoded.test,
        test_masks=decoded.test_masks,
        test_labels=decoded.test_labels,
        test_defects=list(decoded.test_defects),
        test_paths=list(decoded.test_paths),
        train_paths=[decoded.good_paths[i] for i in keep],
        val_paths=[decoded.good_paths[i] for i in held],
        has_masks=decoded.has_masks,
    )
    with _lock:
        return _split_cache.setdefault(split_key, data)


def local_root(data: str) -> Path:
    """The local data root ``data`` names; a ConfigError for s3:// (sync it first) or a missing folder."""
    if data.startswith("s3://"):
        raise ConfigError(
            f"data {data}: the engine reads local folders; sync it first (`adkd train` does this for s3:// URIs)"
        )
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} does not exist; pass the folder that holds the category folders")
    return root
