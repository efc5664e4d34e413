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
        self.subset = subset.to(images.device) if subset is not None else None
        # Top and left of each position a tile can have (the one position of a per-position job), on the device.
        positions = grid.positions if position is None else [grid.positions[position]]
        self._starts = torch.tensor(positions, device=images.device).unbind(1)

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

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        """The tiles ``index`` as one contiguous uint8 batch ``[B, 3, t, t]``, in one gather on the images' device:
        a device index tensor (the training loop's) is never read back by the host."""
        if isinstance(index, slice):
            ks = torch.arange(*index.indices(len(self)), device=self.device)
        else:
            ks = torch.as_tensor(index, device=self.device).reshape(-1)
        if self.subset is not None:
            ks = self.subset[ks]
        ys, xs = self._starts
        image, pos = ks // self.per_image, ks % self.per_image
        span = torch.arange(self.grid.tile, device=self.device)
        rows, cols = ys[pos, None] + span, xs[pos, None] + span
        tiles = self.images[image[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [B, t, t, 3]
        return tiles.permute(0, 3, 1, 2).contiguous()  # NCHW in memory too, as the images: the same conv kernels
