"""Which pixels of a model input show the image: letterbox padding does not, and no metric or score reads it.

A validity mask is bool ``[N, 1, s, s]`` at the side ``s`` the model scores (the crop when there is one);
``None`` stands for "every pixel is real" (stretch, center-crop, or letterboxed squares), so the common case
costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from adkd.pipelines.data.geometry import Placement, placement


def valid_mask(where: Placement, crop: int | None = None) -> np.ndarray:
    """bool [s, s]: True where ``where`` put image content into the square (its centred ``crop`` when given)."""
    size = where.size
    mask = np.zeros((size, size), dtype=bool)
    left, top, right, bottom = where.dst
    mask[top:bottom, left:right] = True
    if crop and crop != size:
        o = (size - crop) // 2
        mask = mask[o : o + crop, o : o + crop]
    return mask


def image_sizes(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """(width, height) of each image file, read from its header."""
    from PIL import Image

    sizes = []
    for path in paths:
        with Image.open(path) as img:
            sizes.append(img.size)
    return sizes


def valid_masks(
    paths: Sequence[str | Path], image_size: int, resize: str, crop: int | None = None
) -> torch.Tensor | None:
    """The validity masks of image files as the loader placed them; None when no pixel is padding."""
    if resize != "letterbox" or not paths:
        return None
    masks = [valid_mask(placement(w, h, image_size, resize), crop) for w, h in image_sizes(paths)]
    if all(m.all() for m in masks):
        return None
    return torch.from_numpy(np.stack(masks))[:, None]


def masked_scores(maps: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Image scores as the max of each map over its valid pixels (the plain max where ``valid`` is None)."""
    flat = maps.reshape(len(maps), -1)
    if valid is None:
        return flat.amax(dim=1)
    keep = valid.reshape(len(valid), -1).to(flat.device)
    if keep.shape != flat.shape:
        raise ValueError(f"validity masks {tuple(valid.shape)} do not match the maps {tuple(maps.shape)}")
    return torch.where(keep, flat, torch.full_like(flat, -torch.inf)).amax(dim=1)


def select(valid: torch.Tensor | None, index: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor | None:
    """The masks of the images at ``index`` (None stays None)."""
    if valid is None:
        return None
    return valid[torch.as_tensor(np.asarray(index), dtype=torch.long)]
