"""A tiled model's tiling as the exported file records it, and whole-image scoring around a tile runner.

The ONNX graph of a tiled model scores tiles; its ``tiling`` metadata (``TilingSpec.to_meta``) says how
whole images become tiles and how the tile maps are stitched. ``score_tiled`` does that around any callable
that scores a uint8 NHWC batch of tiles, so ONNX Runtime, OpenVINO and the int8 graph share one path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adkd.errors import ConfigError
from adkd.pipelines.tiling.grid import TileGrid, blend_weights, split, stitch

TileRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TilingSpec:
    """How whole images become the graph's tiles: tile side, stride, blend, and the per-position layout."""

    tile: int
    stride: int
    blend: str = "linear"
    mode: str = "shared"  # shared | per_position
    image_size: int | None = None  # square side images are first brought to; None: their own size
    positions: int | None = None  # per_position: how many models (tile positions)
    height: int | None = None  # per_position: the image size the positions were trained on
    width: int | None = None

    @classmethod
    def from_config(cls, tiling: Any, height: int | None = None, width: int | None = None) -> TilingSpec:
        """From a ``TilingConfig``; per-position needs the trained image size."""
        spec = cls(
            tile=int(tiling.tile_size), stride=int(tiling.step), blend=tiling.blend, mode=tiling.mode,
            image_size=tiling.image_size,
        )  # fmt: skip
        if tiling.mode == "per_position":
            if height is None or width is None:
                raise ConfigError("a per-position tiling needs the trained image size")
            n = len(TileGrid(height, width, spec.tile, spec.stride))
            spec = cls(**{**asdict(spec), "positions": n, "height": int(height), "width": int(width)})
        return spec

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TilingSpec | None:
        """The spec in a model's metadata (``meta["tiling"]``), or None for an untiled model."""
        raw = meta.get("tiling")
        if not raw:
            return None
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"the model's tiling metadata {raw!r} is not understood ({exc}); re-export it") from None

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def per_position(self) -> bool:
        return self.mode == "per_position"

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) every input is brought to, or None when inputs keep their own size."""
        if self.per_position:
            return int(self.height or 0), int(self.width or 0)
        if self.image_size is not None:
            return self.image_size, self.image_size
        return None

    def grid(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile, self.stride)

    def weights(self) -> np.ndarray:
        return blend_weights(self.tile, self.stride, self.blend)

    def tiles(self, images: np.ndarray) -> np.ndarray:
        """The tiles of same-size uint8 NHWC whole images, in the graph's order."""
        return split(np.ascontiguousarray(images), self.grid(images.shape[1], images.shape[2]), "nhwc")

    def tiles_per_call(self, wanted: int) -> int:
        """``wanted`` rounded down to whole images' worth of positions for a per-position graph."""
        group = (self.positions or 1) if self.per_position else 1
        return max(group, (int(wanted) // group) * group)


def score_tiled(
    run: TileRunner, images: np.ndarray, spec: TilingSpec, tiles_per_call: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Stitched float32 maps ``[N, H, W]`` and image scores ``[N]`` (map maxima) of same-size uint8 NHWC images."""
    images = np.ascontiguousarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"tiled scoring takes uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    grid = spec.grid(images.shape[1], images.shape[2])
    if spec.per_position and len(grid) != spec.positions:
        raise ConfigError(
            f"a {images.shape[2]}x{images.shape[1]} image has {len(grid)} tile positions; the per-position model "
            f"has {spec.positions} (inputs are brought to {spec.width}x{spec.height} first)"
        )
    tiles = split(images, grid, "nhwc")
    step = spec.tiles_per_call(tiles_per_call)
    maps = []
    for i in range(0, len(tiles), step):
        tile_maps = run(np.ascontiguousarray(tiles[i : i + step]))[0]
        maps.append(np.asarray(tile_maps, dtype=np.float32).reshape(-1, grid.tile, grid.tile))
    stitched = stitch(np.concatenate(maps), grid, spec.weights())
    return stitched, stitched.reshape(len(stitched), -1).max(axis=1)
