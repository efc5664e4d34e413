"""A deterministic synthetic data set in the MVTec AD layout, for tests and the offline demo.

Textures (weave, grain, dots) get scratches, holes and stains; objects (disc, bolt, chip) get
missing, extra and misplaced parts and scratches. Normal images vary (shift, rotation, phase,
colour jitter, noise), and each defective image is rendered twice, with and without the defect,
under the same jitter and noise: its mask is exactly where the pixels differ.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from adkd.errors import ConfigError, DataError

TEXTURES = ("weave", "grain", "dots")
OBJECTS = ("disc", "bolt", "chip")
CATEGORIES = TEXTURES + OBJECTS
TEXTURE_DEFECTS = ("scratch", "hole", "stain")
OBJECT_DEFECTS = ("missing_part", "extra_part", "misplaced", "scratch")
MIN_DEFECT_FRACTION = 0.003  # of the image area; smaller draws are redrawn so every mask is visible

Colour = tuple[float, float, float]


@dataclass
class Part:
    """A flat-coloured shape in the object's frame (coordinates in [-1, 1])."""

    shape: str  # circle | rect | hexagon | segment
    params: tuple[float, ...]
    colour: Colour


@dataclass
class Scene:
    """What one image shows: a background or texture, the object's parts and painted overlays."""

    category: str
    shift: tuple[float, float]
    angle: float
    phase: tuple[float, float]
    parts: list[Part] = field(default_factory=list)
    overlays: list[Part] = field(default_factory=list)  # painted in image coordinates (defects)


# ---------------------------------------------------------------- geometry


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(coords, coords, indexing="ij")
    return u, v


def _to_frame(u: np.ndarray, v: np.ndarray, shift: tuple[float, float], angle: float):
    c, s = math.cos(angle), math.sin(angle)
    x, y = u - shift[0], v - shift[1]
    return c * x + s * y, -s * x + c * y


def _shape_mask(part: Part, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = part.params
    if part.shape == "circle":
        return (x - p[0]) ** 2 + (y - p[1]) ** 2 <= p[2] ** 2
    if part.shape == "rect":
        return (x >= p[0]) & (x <= p[2]) & (y >= p[1]) & (y <= p[3])
    if part.shape == "hexagon":
        dx, dy = np.abs(x - p[0]), np.abs(y - p[1])
        return (dy <= p[2] * math.sqrt(3) / 2) & (dx * math.sqrt(3) / 2 + dy / 2 <= p[2] * math.sqrt(3) / 2)
    if part.shape == "segment":
        x0, y0, x1, y1, width = p
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        return (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2 <= (width / 2) ** 2
    raise ValueError(f"unknown shape {part.shape}")


def _paint(img: np.ndarray, parts: Sequence[Part], x: np.ndarray, y: np.ndarray) -> None:
    for part in parts:
        img[_shape_mask(part, x, y)] = part.colour


# ---------------------------------------------------------------- textures


def _texture(name: str, x: np.ndarray, y: np.ndarray, phase: tuple[float, float]) -> np.ndarray:
    px, py = phase
    if name == "weave":
        cells = 4.0  # thread crossings per unit length: 8 cells across the image
        i, j = np.floor((x + px) * cells), np.floor((y + py) * cells)
        fx, fy = (x + px) * cells - i, (y + py) * cells - j
        horizontal = (i + j) % 2 == 0
        shade = np.where(horizontal, np.sin(np.pi * fy), np.sin(np.pi * fx))
        base = np.array([0.78, 0.64, 0.44], dtype=np.float32)
        return base * (0.55 + 0.45 * shade)[..., None]
    if name == "grain":
        warp = 0.18 * np.sin(2 * np.pi * (0.6 * x + px)) + 0.08 * np.sin(2 * np.pi * (1.7 * y + py))
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (3.0 * (y + warp) + py))
        light, dark = np.array([0.74, 0.52, 0.32]), np.array([0.47, 0.29, 0.15])
        return (dark + (light - dark) * rings[..., None]).astype(np.float32)
    if name == "dots":
        period = 0.32
        fx = np.mod(x + px, period) / period - 0.5
        fy = np.mod(y + py, period) / period - 0.5
        dot = (fx**2 + fy**2) <= 0.28**2
        img = np.empty((*x.shape, 3), dtype=np.float32)
        img[:] = (0.82, 0.85, 0.9)
        img[dot] = (0.2, 0.3, 0.62)
        return img
    raise ValueError(name)


SCRATCH_COLOURS: dict[str, Colour] = {"weave": (0.97, 0.96, 0.9), "grain": (0.97, 0.96, 0.9), "dots": (0.85, 0.2, 0.1)}


def _texture_defect(category: str, kind: str, rng: np.random.Generator, scale: float = 1.0) -> list[Part]:
    """A defect painted on a texture; ``scale`` multiplies its lengths (its area by ``scale ** 2``)."""
    cx, cy = rng.uniform(-0.6, 0.6, size=2)
    if kind == "scratch":
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.6, 1.0) * scale
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        width = rng.uniform(0.07, 0.1) * scale
        return [Part("segment", (cx - dx, cy - dy, cx + dx, cy + dy, width), SCRATCH_COLOURS[category])]
    if kind == "hole":
        r = rng.uniform(0.12, 0.2) * scale
        rim = (cx, cy, r + 0.04 * scale)
        return [Part("circle", rim, (0.3, 0.27, 0.25)), Part("circle", (cx, cy, r), (0.04, 0.04, 0.05))]
    if kind == "stain":
        colour = (0.3, 0.42, 0.12)
        blobs = [Part("circle", (cx, cy, rng.uniform(0.1, 0.16) * scale), colour)]
        for _ in range(3):
            ox, oy = rng.uniform(-0.12, 0.12, size=2) * scale
            blobs.append(Part("circle", (cx + ox, cy + oy, rng.uniform(0.06, 0.11) * scale), colour))
        return blobs
    raise ValueError(kind)


# ---------------------------------------------------------------- objects

STEEL: Colour = (0.72, 0.72, 0.75)


def _object_parts(name: str) -> tuple[Colour, list[Part]]:
    """The background colour and the parts of a defect-free object, in its own frame."""
    if name == "disc":
        holes = [
            Part("circle", (0.36 * math.cos(a), 0.36 * math.sin(a), 0.12), (0.18, 0.18, 0.2))
            for a in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)
        ]
        return (0.16, 0.17, 0.2), [
            Part("circle", (0, 0, 0.66), (0.66, 0.66, 0.68)),
            Part("circle", (0, 0, 0.5), (0.56, 0.57, 0.6)),
            Part("circle", (0, 0, 0.16), (0.1, 0.1, 0.12)),
            *holes,
            Part("rect", (0.48, -0.06, 0.64, 0.06), (0.92, 0.55, 0.12)),
        ]
    if name == "bolt":
        threads = [Part("rect", (-0.14, y, 0.14, y + 0.04), (0.5, 0.5, 0.53)) for y in np.arange(-0.1, 0.7, 0.12)]
        return (0.1, 0.12, 0.22), [
            Part("rect", (-0.14, -0.25, 0.14, 0.75), STEEL),
            *threads,
            Part("hexagon", (0, -0.45, 0.32), (0.8, 0.8, 0.82)),
            Part("circle", (0, -0.45, 0.1), (0.55, 0.55, 0.58)),
        ]
    if name == "chip":
        pins = [
            Part("rect", (x0, y - 0.055, x0 + 0.19, y + 0.055), (0.85, 0.85, 0.86))
            for x0 in (-0.64, 0.45)
            for y in (-0.3, -0.1, 0.1, 0.3)
        ]
        return (0.1, 0.38, 0.2), [
            *pins,
            Part("rect", (-0.45, -0.45, 0.45, 0.45), (0.1, 0.1, 0.11)),
            Part("circle", (-0.28, -0.28, 0.07), (0.45, 0.45, 0.47)),
        ]
    raise ValueError(name)


def _removable(name: str, parts: list[Part]) -> list[int]:
    """Indices of parts whose absence is a 'missing part' defect (not the body)."""
    if name == "disc":
        return [3, 4, 5, 6, 7]
    if name == "bolt":
        return [0]  # the shaft
    return list(range(8))  # chip pins


def _object_defect(name: str, kind: str, parts: list[Part], rng: np.random.Generator) -> list[Part]:
    parts = [Part(p.shape, p.params, p.colour) for p in parts]
    if kind == "missing_part":
        idx = int(rng.choice(_removable(name, parts)))
        if name == "bolt":  # a broken-off shaft: the lower half is gone
            parts[idx] = Part("rect", (-0.14, -0.25, 0.14, 0.2), STEEL)
            parts = [p for i, p in enumerate(parts) if not (p.shape == "rect" and i > 0 and p.params[1] > 0.15)]
        elif name == "chip":  # two neighbouring pins on one side
            pair = {idx, idx ^ 1}
            parts = [p for i, p in enumerate(parts) if i not in pair]
        else:
            del parts[idx]
        return parts
    if kind == "extra_part":
        if name == "disc":
            a = rng.choice([math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4])
            parts.append(Part("circle", (0.36 * math.cos(a), 0.36 * math.sin(a), 0.12), (0.18, 0.18, 0.2)))
        elif name == "bolt":
            side = rng.choice([-1.0, 1.0])
            y = rng.uniform(0.0, 0.5)
            x0, x1 = sorted((0.14 * side, 0.46 * side))
            parts.append(Part("rect", (x0, y, x1, y + 0.2), STEEL))
        else:
            x = rng.choice([-0.25, 0.0, 0.25])
            parts.insert(0, Part("rect", (x - 0.07, -0.68, x + 0.07, -0.45), (0.85, 0.85, 0.86)))
        return parts
    if kind == "misplaced":
        if name == "disc":
            idx = int(rng.integers(3, 7))
            x, y, r = parts[idx].params
            a = math.atan2(y, x) + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 0.7)
            parts[idx] = Part("circle", (0.36 * math.cos(a), 0.36 * math.sin(a), r), parts[idx].colour)
        elif name == "bolt":
            dx = rng.choice([-1.0, 1.0]) * rng.uniform(0.22, 0.3)
            head = [i for i, p in enumerate(parts) if p.params[1] == -0.45 or (p.shape != "rect")]
            for i in head:
                p = parts[i]
                parts[i] = Part(p.shape, (p.params[0] + dx, *p.params[1:]), p.colour)
        else:
            idx = int(rng.integers(0, 8))
            x0, y0, x1, y1 = parts[idx].params
            dy = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.14)
            dx = 0.14 if x0 > 0 else -0.14
            parts[idx] = Part("rect", (x0 + dx, y0 + dy, x1 + dx, y1 + dy), parts[idx].colour)
        return parts
    raise ValueError(kind)


def _object_scratch(rng: np.random.Generator, scale: float = 1.0) -> list[Part]:
    cx, cy = rng.uniform(-0.25, 0.25, size=2)
    angle, length = rng.uniform(0, math.pi), rng.uniform(0.5, 0.8) * scale
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    width = rng.uniform(0.07, 0.1) * scale
    return [Part("segment", (cx - dx, cy - dy, cx + dx, cy + dy, width), (0.95, 0.25, 0.2))]


# ---------------------------------------------------------------- rendering


def _render(scene: Scene, size: int) -> np.ndarray:
    u, v = _grid(size)
    x, y = _to_frame(u, v, scene.shift, scene.angle)
    if scene.category in TEXTURES:
        img = _texture(scene.category, x, y, scene.phase)
    else:
        background, _ = _object_parts(scene.category)
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = background
        # a soft light gradient so the background is not flat
        img *= (1.0 + 0.12 * (u - v) / 2)[..., None]
        _paint(img, scene.parts, x, y)
    _paint(img, scene.overlays, x, y)
    return img


def _finish(img: np.ndarray, gain: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((img * gain + noise) * 255), 0, 255).astype(np.uint8)


def _normal_scene(category: str, rng: np.random.Generator) -> Scene:
    is_texture = category in TEXTURES
    max_angle = 4.0 if is_texture else 6.0
    scene = Scene(
        category=category,
        shift=tuple(rng.uniform(-0.06, 0.06, size=2)),
        angle=math.radians(rng.uniform(-max_angle, max_angle)),
        phase=tuple(rng.uniform(0, 1, size=2)) if is_texture else (0.0, 0.0),
    )
    if not is_texture:
        scene.parts = _object_parts(category)[1]
    return scene


def _defect_scene(scene: Scene, kind: str, rng: np.random.Generator, scale: float = 1.0) -> Scene:
    out = Scene(scene.category, scene.shift, scene.angle, scene.phase, list(scene.parts), [])
    if scene.category in TEXTURES:
        out.overlays = _texture_defect(scene.category, kind, rng, scale)
    elif kind == "scratch":
        out.overlays = _object_scratch(rng, scale)
    else:
        out.parts = _object_defect(scene.category, kind, scene.parts, rng)
    return out


def render_sample(
    category: str, size: int, rng: np.random.Generator, defect: str | None = None, defect_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """One uint8 RGB image ``[size, size, 3]`` and, for a defect, its exact uint8 mask in {0, 255}.

    ``defect_scale`` multiplies the lengths of texture defects and scratches (the parts of objects keep theirs).
    """
    scene = _normal_scene(category, rng)
    gain = (rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, size=3)).astype(np.float32)
    noise = rng.normal(0, 0.012, size=(size, size, 3)).astype(np.float32)
    normal = _finish(_render(scene, size), gain, noise)
    if defect is None:
        return normal, None
    scalable = category in TEXTURES or defect == "scratch"
    least = MIN_DEFECT_FRACTION * (defect_scale**2 if scalable else 1.0)
    for _ in range(20):
        image = _finish(_render(_defect_scene(scene, defect, rng, defect_scale), size), gain, noise)
        changed = np.any(image != normal, axis=2)
        if changed.mean() >= least:
            return image, changed.astype(np.uint8) * 255
    raise RuntimeError(f"could not draw a visible {defect} on {category} at {size}px")


def defect_kinds(category: str) -> tuple[str, ...]:
    return TEXTURE_DEFECTS if category in TEXTURES else OBJECT_DEFECTS


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    # Seeded per category by name, so a category's images do not depend on which others are made.
    return np.random.default_rng([seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index])


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _write_category(
    out: Path, category: str, size: int, n_train: int, n_test: int, seed: int, defect_scale: float = 1.0
) -> dict[str, int]:
    counts: dict[str, int] = {"train": n_train}
    for i in range(n_train):
        image, _ = render_sample(category, size, _rng(seed, category, "train", i))
        _save(image, out / "train" / "good" / f"{i:03d}.png")
    kinds = defect_kinds(category)
    n_good = max(1, round(n_test / (len(kinds) + 1)))
    plan = ["good"] * n_good + [kinds[i % len(kinds)] for i in range(n_test - n_good)]
    index: dict[str, int] = {}
    for i, defect in enumerate(plan):
        k = index[defect] = index.get(defect, -1) + 1
        rng = _rng(seed, category, "test", i)
        image, mask = render_sample(category, size, rng, None if defect == "good" else defect, defect_scale)
        _save(image, out / "test" / defect / f"{k:03d}.png")
        if mask is not None:
            _save(mask, out / "ground_truth" / defect / f"{k:03d}_mask.png")
        counts[f"test/{defect}"] = k + 1
    return counts


def synthesize(
    root: str | Path,
    categories: Sequence[str] | None = None,
    size: int = 64,
    n_train: int = 32,
    n_test: int = 24,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    defect_scale: float = 1.0,
) -> dict[str, dict[str, int]]:
    """Write the synthetic set under ``root`` (replacing those categories) and return counts per category.

    ``defect_scale`` < 1 makes texture defects and scratches smaller (area by its square): small defects on
    large images, the case tiling is for.
    """
    names = list(dict.fromkeys(categories or CATEGORIES))
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown synthetic category {', '.join(unknown)}: choose from {', '.join(CATEGORIES)}")
    if size < 32:
        raise ConfigError(f"--size {size} is too small: use at least 32 pixels")
    if n_train < 1:
        raise ConfigError(f"--train {n_train} is invalid: use at least 1 training image")
    if n_test < 2:
        raise ConfigError(f"--test {n_test} is invalid: use at least 2 test images (good and defective)")
    if not 0.05 <= defect_scale <= 2.0:
        raise ConfigError(f"--defect-scale {defect_scale} is invalid: use a factor in [0.05, 2] (1 = the default)")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file: pass a folder for the synthetic data set")
    root.mkdir(parents=True, exist_ok=True)
    summary = {}
    for category in names:
        final = root / category
        if final.exists() and not (final / "train").is_dir():
            raise DataError(f"{final} exists and is not a category folder: choose another ROOT or remove it")
        staging = root / f".{category}.synth-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        summary[category] = _write_category(staging, category, size, n_train, n_test, seed, defect_scale)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        if progress:
            progress(category)
    return summary
