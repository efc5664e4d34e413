"""Synthetic defects painted on normal images: a labelled validation set made without test labels.

Used by `adkd tune` to score trials: each held-out normal image appears once as it is and once with a
defect (cut-paste of a foreign patch, or a Perlin-noise-shaped blend of a foreign texture), with the exact
mask of the changed pixels. Everything is drawn from one seeded generator, so the set is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LabelledSet:
    """uint8 images [N,3,H,W], uint8 masks [N,1,H,W] in {0,1}, int64 labels [N], defect kind per image."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    kinds: list[str]


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise in about [-1, 1] with ``cells`` lattice cells per axis."""
    h, w = shape
    cy, cx = cells
    angles = rng.uniform(0, 2 * np.pi, size=(cy + 1, cx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys = np.linspace(0, cy, h, endpoint=False)
    xs = np.linspace(0, cx, w, endpoint=False)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0

    def dot(gy: np.ndarray, gx: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        g = grads[gy, gx]
        return g[..., 0] * dx + g[..., 1] * dy

    n00 = dot(y0, x0, fy, fx)
    n10 = dot(y0 + 1, x0, fy - 1, fx)
    n01 = dot(y0, x0 + 1, fy, fx - 1)
    n11 = dot(y0 + 1, x0 + 1, fy - 1, fx - 1)
    uy, ux = _fade(fy), _fade(fx)
    top = n00 * (1 - ux) + n01 * ux
    bottom = n10 * (1 - ux) + n11 * ux
    return np.sqrt(2) * (top * (1 - uy) + bottom * uy)


def _foreign_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A texture unlike the category: coloured noise with stripes, [H,W,3] float in [0,255]."""
    base = rng.uniform(0, 255, size=3)
    noise = rng.normal(0, 40, size=(h, w, 3))
    period = rng.uniform(3, 10)
    stripes = 60 * np.sin(np.arange(w)[None, :, None] * 2 * np.pi / period + rng.uniform(0, 6))
    return np.clip(base + noise + stripes, 0, 255)


def _perlin_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    for _ in range(20):  # redraw until the blob is neither empty nor most of the image
        cells = (int(rng.integers(2, 6)), int(rng.integers(2, 6)))
        noise = perlin_noise((h, w), cells, rng)
        mask = noise > rng.uniform(0.35, 0.6)
        if 0.005 < mask.mean() < 0.3:
            break
    texture = _foreign_texture(h, w, rng)
    beta = rng.uniform(0.2, 0.8)  # how much of the original shows through
    out = img.astype(np.float64)
    m = mask[..., None]
    out = np.where(m, beta * out + (1 - beta) * texture, out).round().clip(0, 255).astype(np.uint8)
    return out, mask & np.any(out != img, axis=-1)  # exact: only pixels that really changed


def _cut_paste(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    ph = int(rng.integers(max(2, h // 10), max(3, h // 4)))
    pw = int(rng.integers(max(2, w // 10), max(3, w // 4)))
    sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    dy, dx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    patch = donor[sy : sy + ph, sx : sx + pw].astype(np.float64)
    patch = patch * rng.uniform(0.6, 1.4, size=3) + rng.uniform(-40, 40, size=3)  # colour jitter
    if rng.random() < 0.5:
        patch = patch[::-1, ::-1]
    out = img.copy()
    region = out[dy : dy + ph, dx : dx + pw]
    new = patch.round().clip(0, 255).astype(np.uint8)
    changed = np.any(new != region, axis=-1)
    region[...] = new
    mask = np.zeros((h, w), dtype=bool)
    mask[dy : dy + ph, dx : dx + pw] = changed
    return out, mask


def with_synthetic_defects(normal: torch.Tensor, seed: int = 0) -> LabelledSet:
    """Each normal image once as is (label 0) and once with a synthetic defect (label 1), with masks."""
    if normal.ndim != 4 or normal.shape[1] != 3 or normal.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N,3,H,W], got {normal.dtype} {tuple(normal.shape)}")
    n = len(normal)
    if n == 0:
        raise ValueError("no normal images to paint defects on; set val_fraction > 0")
    rng = np.random.default_rng(seed)
    hwc = normal.permute(0, 2, 3, 1).numpy()
    defected, masks, kinds = [], [], []
    for i in range(n):
        kind = "cut_paste" if i % 2 == 0 else "perlin_blend"
        if kind == "cut_paste":
            donor = hwc[(i + 1 + int(rng.integers(0, max(n - 1, 1)))) % n] if n > 1 else hwc[i][::-1]
            img, mask = _cut_paste(hwc[i], donor, rng)
            if not mask.any():  # the patch happened to match; fall back to a texture blend
                kind = "perlin_blend"
        if kind == "perlin_blend":
            img, mask = _perlin_defect(hwc[i], rng)
        defected.append(img)
        masks.append(mask)
        kinds.append(kind)
    images = torch.cat([normal, torch.from_numpy(np.stack(defected)).permute(0, 3, 1, 2).contiguous()])
    zeros = torch.zeros(n, 1, *normal.shape[-2:], dtype=torch.uint8)
    defect_masks = torch.from_numpy(np.stack(masks)).to(torch.uint8)[:, None]
    labels = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    return LabelledSet(images=images, masks=torch.cat([zeros, defect_masks]), labels=labels, kinds=["good"] * n + kinds)
