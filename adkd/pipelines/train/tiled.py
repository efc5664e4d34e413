"""Tiled training: the tiles an epoch trains on, the whole-image eval model, the tiled artifact.

With ``tiling.tile_size`` set the engine loads images at ``tiling.image_size`` (None: their own size), trains
on tiles cut on demand (``adkd.pipelines.data.tiles.TileSet``) and scores whole images through
``TiledModel``, so thresholds, metrics and overlays use the stitched full-resolution map.

``tiling.mode=per_position`` trains one model per tile position: ``adkd.pipelines.train.positions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.data.tiles import TileSet
from adkd.pipelines.tiling.grid import TileGrid
from adkd.pipelines.tiling.model import TiledModel
from adkd.pipelines.tiling.spec import TilingSpec
from adkd.pipelines.train.config import TrainConfig

VAL_TILES = 256  # held-out tiles for the per-epoch validation loss: a fixed seeded subset above this


def tile_grid(config: TrainConfig, images: torch.Tensor) -> TileGrid:
    tiling = config.tiling
    assert tiling.tile_size is not None
    return TileGrid(int(images.shape[-2]), int(images.shape[-1]), tiling.tile_size, tiling.step)


def tiling_spec(config: TrainConfig, images: torch.Tensor) -> TilingSpec:
    return TilingSpec.from_config(config.tiling, int(images.shape[-2]), int(images.shape[-1]))


def training_sources(
    config: TrainConfig, data: Any, device: torch.device, notes: list[str]
) -> tuple[torch.Tensor | TileSet, torch.Tensor | TileSet]:
    """What the training loop indexes (images, or their tiles on ``device``) and the held-out loss reads."""
    if not config.tiling.enabled:
        return data.train.to(device), data.val
    grid = tile_grid(config, data.train)
    position = config.tiling.position
    train = TileSet(data.train.to(device), grid, position)
    val = TileSet(data.val, grid, position)
    if len(val) > VAL_TILES:
        gen = torch.Generator().manual_seed(config.seed)
        val = val.with_subset(torch.randperm(len(val), generator=gen)[:VAL_TILES].sort().values)
    where = f"position {position} of {len(grid)}" if position is not None else f"{len(grid)} tiles per image"
    limit = config.tiling.max_tiles_per_epoch
    per_epoch = f"; each epoch a seeded subset of {limit}" if train.total > limit else ""
    notes.append(
        f"tiled: {grid.width}x{grid.height} images, {grid.tile} px tiles every {grid.stride} px ({where}); "
        f"{train.total} training tiles{per_epoch} (settings tiling.*)"
    )
    return train, val


def limit_epoch(order: torch.Tensor, config: TrainConfig, world_size: int = 1) -> torch.Tensor:
    """An epoch's tile order cut to ``tiling.max_tiles_per_epoch`` (shared among ranks): a seeded subset."""
    if not config.tiling.enabled:
        return order
    return order[: max(1, config.tiling.max_tiles_per_epoch // world_size)]


def cache_allowed(config: TrainConfig, train: Any, notes: list[str]) -> bool:
    """Whether the teacher cache may hold every training tile's features (not when epochs see subsets)."""
    if not isinstance(train, TileSet) or train.total <= config.tiling.max_tiles_per_epoch:
        return True
    if config.teacher_cache:
        raise ConfigError(
            f"teacher_cache=true but each epoch trains on a subset of {config.tiling.max_tiles_per_epoch} of "
            f"{train.total} tiles: raise tiling.max_tiles_per_epoch to {train.total} or leave teacher_cache unset"
        )
    notes.append(
        f"teacher feature cache off: epochs see {config.tiling.max_tiles_per_epoch} of {train.total} tiles, "
        "so caching every tile's features would compute features no epoch uses"
    )
    return False


def eval_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """What scores whole images: the model itself, or the tiled model around it."""
    tiling = config.tiling
    if not tiling.enabled:
        return model
    assert tiling.tile_size is not None
    return TiledModel(model, tiling.tile_size, tiling.step, tiling.blend, tiles_per_call=config.eval_batch_size)


def tiling_meta(config: TrainConfig, images: torch.Tensor) -> dict[str, Any]:
    """The checkpoint's ``tiling`` entry (empty when untiled)."""
    return {"tiling": tiling_spec(config, images).to_meta()} if config.tiling.enabled else {}


def mask_geometry(config: TrainConfig, crop: int | None) -> tuple[int, str, int | None]:
    """(size, resize, crop) that place a file's pixels in the exported model's input, for validity masks.

    Tiled, the input is the whole image at ``tiling.image_size`` (no crop), or at its own size (nothing padded).
    """
    tiling = config.tiling
    if not tiling.enabled:
        return config.image_size, config.resize, crop
    assert tiling.tile_size is not None
    if tiling.image_size is None:
        return tiling.tile_size, "stretch", None  # own size: no letterbox padding anywhere
    return tiling.image_size, config.resize, None


def export_tiled_model(
    model: nn.Module, config: TrainConfig, out_path: Path, thresholds: Any, full: Any, spec: TilingSpec | None = None
) -> Path:
    """The tile graph of ``model`` (a ``TiledModel`` or the tile model) at ``out_path``, checked on test images.

    ``full``: the run's data; None checks on synthetic images, with ``spec`` (the checkpoint's) giving the tiling.
    """
    import copy

    from adkd.pipelines.export.tiled import export_tiled

    inner = model.model if isinstance(model, TiledModel) else model
    cpu = copy.deepcopy(inner).to("cpu", memory_format=torch.contiguous_format).float().eval()
    meta = {"model": config.model, "backbone": config.backbone, "category": config.category, "resize": config.resize}
    if full is None:
        spec = spec or TilingSpec.from_config(config.tiling)
        return export_tiled(cpu, out_path, spec, thresholds, {**meta, "checkpoint": "model.pt"})
    labels = full.test_labels.tolist()
    picks = [
        next((i for i, y in enumerate(labels) if y == 0), None),
        next((i for i, y in enumerate(labels) if y), None),
    ]
    picks = [i for i in picks if i is not None]
    images = full.test[picks] if picks else full.val[:2]
    what = "test" if picks else "validation"
    return export_tiled(
        cpu,
        out_path,
        tiling_spec(config, full.train),
        thresholds,
        {**meta, "image_level": not full.has_masks, "checkpoint": "model.pt"},
        images=images.permute(0, 2, 3, 1).contiguous().numpy() if len(images) else None,
        source=f"{what} images of {config.data}/{config.category}",
    )
