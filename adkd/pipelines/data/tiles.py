"""Training tiles cut on demand from a category's full-resolution images (no copy of every tile is kept).

A ``TileSet`` indexes the tiles of uint8 images ``[N, 3, H, W]`` on a ``TileGrid``: tile ``k`` is position
``k % P`` of image ``k // P`` (or, for a per-position job, the one position of image ``k``). It answers
``len()`` and indexing with an index tensor or a slice like the image tensor it replaces, so the training
loop, the held-out loss and the teacher cache take it unchanged.
"""

from __future__ import annotations

import torch

from adkd.errors import ConfigError
from adkd.pipelines.tiling.grid import TileGrid


class TileSet:
    """The tiles of ``images`` on ``grid``: all positions, or only ``position``; optionally a fixed subset."""

    def __init__(
        self, images: torch.Tensor, grid: TileGrid, position: int | None = None, subset: torch.Tensor | None = None
    ) -> None:
        if tuple(images.shape[-2:]) != (grid.height, grid.width):
            raise ConfigError(f"images {tuple(images.shape)} do not match the tile grid {grid.width}x{grid.height}")
        if grid.padded:
            raise ConfigError(
                f"tiling.tile_size {grid.tile} is larger than the images ({grid.width}x{grid.height}): lower "
                "tiling.tile_size or raise tiling.image_size"
            )
        if position is not None and not 0 <= position < len(grid):
            raise ConfigError(f"tiling.position {position} is not one of the grid's {len(grid)} positions")
        self.images, self.grid, self.position = images, grid, position
        self.per_image = 1 if position is not None else len(grid)
        self.subset = subset

    @property
    def total(self) -> int:
        """Every tile of every image (before any subset)."""
        return len(self.images) * self.per_image

    def __len__(self) -> int:
        return self.total if self.subset is None else len(self.subset)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> TileSet:
        return TileSet(self.images.to(device), self.grid, self.position, self.subset)

    def with_subset(self, subset: torch.Tensor) -> TileSet:
        return TileSet(self.images, self.grid, self.position, subset)

    def locate(self, k: int) -> tuple[int, int, int]:
        """(image index, top, left) of tile ``k`` (after the subset)."""
        if self.subset is not None:
            k = int(self.subset[k])
        image, pos = divmod(int(k), self.per_image)
        y, x = self.grid.positions[self.position if self.position is not None else pos]
        return image, y, x

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, slice):
            ks = range(*index.indices(len(self)))
        elif isinstance(index, int):
            ks = [index]
        else:
            ks = index.reshape(-1).tolist()
        t = self.grid.tile
        crops = []
        for k in ks:
            image, y, x = self.locate(k)
            crops.append(self.images[image, :, y : y + t, x : x + t])
        if not crops:
            return self.images.new_zeros((0, self.images.shape[1], t, t))
        return torch.stack(crops)
