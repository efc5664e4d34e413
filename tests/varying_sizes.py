"""A KolektorSDD-like category for tests: grayscale, about 1:2.5, sizes varying by a few percent.

Normal images are smooth stripes with noise; a defect is a bright rectangle drawn at a known place,
and its mask is exactly that rectangle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _stripes(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    base = 110 + 30 * np.sin(2 * np.pi * (y / 9.0 + rng.uniform(0, 1))) + 0 * x
    return np.clip(base + rng.normal(0, 4, (height, width)), 0, 255)


def defect_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the drawn defect: a block in the lower third, off centre."""
    left, top = width // 5, (2 * height) // 3
    return left, top, left + max(4, width // 3), top + max(4, height // 8)


def write_varying_category(
    root: Path,
    name: str = "kolektor",
    n_train: int = 10,
    n_good: int = 3,
    n_bad: int = 4,
    seed: int = 0,
    masks: bool = True,
) -> Path:
    """Write ``root/name`` in the MVTec layout (masks under ground_truth/ unless ``masks`` is false)."""
    rng = np.random.default_rng(seed)
    cat = root / name
    folders = {"train/good": n_train, "test/good": n_good, "test/crack": n_bad}
    for folder, count in folders.items():
        (cat / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            width = 40 + int(rng.integers(-1, 2))
            height = 100 + int(rng.integers(-4, 5))
            img = _stripes(width, height, rng)
            if folder == "test/crack":
                left, top, right, bottom = defect_box(width, height)
                img[top:bottom, left:right] = 250
                if masks:
                    mask = np.zeros((height, width), np.uint8)
                    mask[top:bottom, left:right] = 255
                    (cat / "ground_truth" / "crack").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(cat / "ground_truth" / "crack" / f"{i:03d}_mask.png")
            Image.fromarray(img.astype(np.uint8), mode="L").save(cat / folder / f"{i:03d}.png")
    return cat
