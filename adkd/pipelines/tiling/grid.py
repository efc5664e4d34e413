"""Tiles of an image and their maps stitched back: pure functions on numpy arrays and torch tensors alike.

A ``TileGrid`` places square tiles of side ``tile`` every ``stride`` pixels along each axis; the last
tile of an axis is pulled back to end at the image's edge, so every pixel is covered and no tile reaches
outside the image. An image smaller than a tile is padded (edge pixels repeated) up to the tile and the
padding is cut from the stitched map.

Stitching blends overlapping tile maps with weights that are 1 in a tile's middle and fall off linearly
over the overlap (``linear``), or with equal weights (``mean``); every pixel's value is the weighted mean
of the tiles covering it, so a map that agrees across tiles is reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from adkd.errors import ConfigError

Blend = Literal["linear", "mean"]
BLENDS: tuple[str, ...] = ("linear", "mean")


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Where the tiles of one axis start: every ``stride`` pixels, the last one flush with the end."""
    if tile < 1 or stride < 1:
        raise ConfigError(f"tile {tile} and stride {stride} must be positive")
    if stride > tile:
        raise ConfigError(f"tiling.stride {stride} is larger than tiling.tile_size {tile}: pixels would be skipped")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a ``height`` x ``width`` image: positions row by row, top-left first."""

    height: int
    width: int
    tile: int
    stride: int

    @cached_property
    def ys(self) -> list[int]:
        return axis_starts(self.height, self.tile, self.stride)

    @cached_property
    def xs(self) -> list[int]:
        return axis_starts(self.width, self.tile, self.stride)

    @cached_property
    def positions(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def canvas(self) -> tuple[int, int]:
        """(height, width) after padding an image smaller than a tile up to the tile."""
        return max(self.height, self.tile), max(self.width, self.tile)

    @property
    def padded(self) -> bool:
        return self.canvas != (self.height, self.width)


def blend_weights(tile: int, stride: int, blend: str = "linear") -> np.ndarray:
    """float32 [tile, tile] weights of one tile's map in the blend; all > 0."""
    if blend not in BLENDS:
        raise ConfigError(f"tiling.blend={blend!r} is invalid: use one of {', '.join(BLENDS)}")
    ramp = tile - stride
    if blend == "mean" or ramp <= 0:
        return np.ones((tile, tile), dtype=np.float32)
    i = np.arange(tile, dtype=np.float64) + 0.5
    line = np.minimum(1.0, np.minimum(i, tile - i) / ramp)
    return np.outer(line, line).astype(np.float32)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _pad_nhwc(images: np.ndarray, grid: TileGrid) -> np.ndarray:
    h, w = grid.canvas
    pad = ((0, 0), (0, h - images.shape[1]), (0, w - images.shape[2]), (0, 0))
    return np.pad(images, pad, mode="edge")


def _pad_nchw(images: Any, grid: TileGrid) -> Any:
    import torch.nn.functional as F

    h, w = grid.canvas
    dtype = images.dtype
    out = F.pad(images.float(), (0, w - images.shape[-1], 0, h - images.shape[-2]), mode="replicate")
    return out.to(dtype)


def split(images: Any, grid: TileGrid, layout: Literal["nchw", "nhwc"] = "nchw") -> Any:
    """Tiles of a batch of same-size images, image after image: [N * P, C, t, t] (or [N * P, t, t, C]).

    ``images`` is a torch tensor or a numpy array, ``[N, C, H, W]`` for ``nchw`` and ``[N, H, W, C]`` for
    ``nhwc``; the tiles come back in the same kind of array.
    """
    h_axis = 2 if layout == "nchw" else 1
    if tuple(images.shape[h_axis : h_axis + 2]) != (grid.height, grid.width):
        raise ConfigError(
            f"images of {images.shape[h_axis + 1]}x{images.shape[h_axis]} do not match the tile grid of "
            f"{grid.width}x{grid.height}"
        )
    if grid.padded:
        images = _pad_nchw(images, grid) if layout == "nchw" else _pad_nhwc(images, grid)
    t = grid.tile
    if layout == "nchw":
        crops = [images[:, :, y : y + t, x : x + t] for y, x in grid.positions]
    else:
        crops = [images[:, y : y + t, x : x + t, :] for y, x in grid.positions]
    if _is_torch(images):
        import torch

        stacked = torch.stack(crops, dim=1)
    else:
        stacked = np.stack(crops, axis=1)
    return stacked.reshape(-1, *stacked.shape[2:])


def stitch(tile_maps: Any, grid: TileGrid, weights: Any) -> Any:
    """Blend tile maps ``[N * P, t, t]`` (or ``[N * P, 1, t, t]``) back into float32 maps ``[N, H, W]``.

    ``weights``: ``blend_weights(...)`` (numpy; converted for torch input). Accumulates in float32 whatever
    the maps' dtype (bf16 under autocast), so the blend is as exact as the predictor's.
    """
    if tile_maps.ndim == 4:
        tile_maps = tile_maps[:, 0]
    n_tiles, t = len(grid), grid.tile
    if tile_maps.shape[0] % n_tiles or tuple(tile_maps.shape[1:]) != (t, t):
        raise ConfigError(f"tile maps {tuple(tile_maps.shape)} do not fit a grid of {n_tiles} tiles of {t}x{t}")
    n = tile_maps.shape[0] // n_tiles
    h, w = grid.canvas
    if _is_torch(tile_maps):
        import torch

        maps = tile_maps.float().reshape(n, n_tiles, t, t)
        wt = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=maps.device)
        total = maps.new_zeros((n, h, w))
        norm = maps.new_zeros((h, w))
    else:
        maps = np.asarray(tile_maps, dtype=np.float32).reshape(n, n_tiles, t, t)
        wt = np.asarray(weights, dtype=np.float32)
        total = np.zeros((n, h, w), dtype=np.float32)
        norm = np.zeros((h, w), dtype=np.float32)
    for p, (y, x) in enumerate(grid.positions):
        total[:, y : y + t, x : x + t] += maps[:, p] * wt
        norm[y : y + t, x : x + t] += wt
    return (total / norm)[:, : grid.height, : grid.width]
