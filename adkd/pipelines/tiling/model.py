"""The tiled eval path in PyTorch: whole images in, stitched maps out, around any tile model.

``TiledModel`` splits normalised images into the grid's tiles, runs the tile model on them in chunks and
stitches the tile maps back; the image score is the maximum of the stitched map (the tile maps are already
smoothed by the model). ``PerPositionModel`` holds one model per tile position and takes the tiles of whole
images in grid order, which is also the graph an exported per-position model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adkd.pipelines.tiling.grid import TileGrid, blend_weights, split, stitch


class PerPositionModel(nn.Module):
    """One model per tile position; input ``[N * P, 3, t, t]``: the P tiles of each image, in grid order."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    @property
    def positions(self) -> int:
        return len(self.models)

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.positions
        x = tiles.reshape(-1, p, *tiles.shape[1:])
        outs = [model(x[:, i]) for i, model in enumerate(self.models)]
        maps = torch.stack([o[0] for o in outs], dim=1)
        scores = torch.stack([o[1] for o in outs], dim=1)
        return maps.reshape(-1, *maps.shape[2:]), scores.reshape(-1)


class TiledModel(nn.Module):
    """Eval path over whole images ``[B, 3, H, W]`` (normalised): ``(stitched map [B,1,H,W], score [B])``."""

    def __init__(
        self, model: nn.Module, tile: int, stride: int, blend: str = "linear", tiles_per_call: int = 32
    ) -> None:
        super().__init__()
        self.model = model
        self.tile, self.stride, self.blend = int(tile), int(stride), blend
        self.weights = blend_weights(self.tile, self.stride, blend)
        group = model.positions if isinstance(model, PerPositionModel) else 1
        self.tiles_per_call = max(group, (int(tiles_per_call) // group) * group)

    def grid(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile, self.stride)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.grid(images.shape[-2], images.shape[-1])
        if isinstance(self.model, PerPositionModel) and len(grid) != self.model.positions:
            raise ValueError(
                f"a {images.shape[-1]}x{images.shape[-2]} image has {len(grid)} tile positions; the per-position "
                f"model was trained on {self.model.positions}"
            )
        tiles = split(images, grid, "nchw")
        maps = [self.model(tiles[i : i + self.tiles_per_call])[0] for i in range(0, len(tiles), self.tiles_per_call)]
        stitched = stitch(torch.cat(maps), grid, self.weights)
        return stitched[:, None], stitched.amax(dim=(1, 2))
