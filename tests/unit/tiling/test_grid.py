"""Tile grids, split and stitch (numpy and torch alike), the training tiles and the tiling settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adkd.errors import ConfigError
from adkd.pipelines.data.tiles import TileSet
from adkd.pipelines.tiling.grid import TileGrid, axis_starts, blend_weights, split, stitch
from adkd.pipelines.train.config import validate_config


@pytest.mark.parametrize(
    ("length", "tile", "stride", "starts"),
    [
        (100, 64, 48, [0, 36]),
        (130, 64, 48, [0, 48, 66]),
        (256, 128, 128, [0, 128]),
        (40, 64, 32, [0]),
        (64, 64, 8, [0]),
    ],
)
def test_axis_starts_cover_every_pixel_and_stay_inside(length: int, tile: int, stride: int, starts: list[int]) -> None:
    got = axis_starts(length, tile, stride)
    assert got == starts
    covered = np.zeros(max(length, tile), dtype=bool)
    for s in got:
        covered[s : s + tile] = True
    assert covered[:length].all() and (length <= tile or got[-1] + tile == length)


def test_stride_larger_than_tile_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"tiling\.stride 80 is larger than tiling\.tile_size 64"):
        axis_starts(200, 64, 80)


def test_blend_weights_are_positive_one_inside_and_ramp_over_the_overlap() -> None:
    w = blend_weights(64, 48)
    assert w.shape == (64, 64) and w.min() > 0 and w.max() == 1.0
    assert w[32, 32] == 1.0 and w[0, 32] < w[8, 32] < w[16, 32] == 1.0  # 16 px of overlap
    assert (blend_weights(64, 64) == 1).all() and (blend_weights(64, 48, "mean") == 1).all()


@pytest.mark.parametrize("blend", ["linear", "mean"])
def test_split_then_stitch_gives_the_image_back(blend: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 100, 130, 2)).astype(np.float32)
    grid = TileGrid(100, 130, 64, 48)
    tiles = split(images, grid, "nhwc")
    assert tiles.shape == (3 * 6, 64, 64, 2)
    assert np.array_equal(tiles[7], images[1, 0:64, 48:112])  # image 1, position 1 (row 0, column 1)
    back = stitch(tiles[..., 0], grid, blend_weights(64, 48, blend))
    assert back.shape == (3, 100, 130) and np.abs(back - images[..., 0]).max() < 1e-6
    torch_tiles = split(torch.from_numpy(images).permute(0, 3, 1, 2), grid)
    assert torch.equal(torch_tiles.permute(0, 2, 3, 1), torch.from_numpy(tiles))
    torch_back = stitch(torch_tiles[:, :1], grid, blend_weights(64, 48, blend))
    assert np.abs(torch_back.numpy() - back).max() < 1e-6


def test_an_image_smaller_than_a_tile_is_padded_and_the_padding_cut() -> None:
    image = np.arange(40 * 50, dtype=np.float32).reshape(1, 40, 50, 1)
    grid = TileGrid(40, 50, 64, 32)
    tiles = split(image, grid, "nhwc")
    assert tiles.shape == (1, 64, 64, 1) and tiles[0, 63, 63, 0] == image[0, 39, 49, 0]  # edge repeated
    assert np.array_equal(stitch(tiles[..., 0], grid, blend_weights(64, 32)), image[..., 0])


def test_stitch_blends_overlaps_as_a_weighted_mean() -> None:
    grid = TileGrid(64, 96, 64, 32)  # two tiles side by side, overlapping on columns 32-63
    maps = np.stack([np.zeros((64, 64)), np.ones((64, 64))]).astype(np.float32)
    out = stitch(maps, grid, blend_weights(64, 32))[0]
    assert out[10, 0] == 0 and out[10, 95] == 1
    row = out[10, 32:64]
    assert np.all(np.diff(row) > 0) and 0 < row[0] < 0.5 < row[-1] < 1  # a smooth hand-over
    assert np.allclose(out[:, 48], out[0, 48])


def test_tile_set_indexes_tiles_like_split() -> None:
    images = torch.randint(0, 255, (3, 3, 100, 130), dtype=torch.uint8)
    grid = TileGrid(100, 130, 64, 48)
    tiles = TileSet(images, grid)
    assert len(tiles) == 18
    expected = split(images, grid)
    assert torch.equal(tiles[torch.tensor([0, 7, 17])], expected[[0, 7, 17]])
    assert tiles[torch.tensor([0, 7, 17])].is_contiguous()  # laid out as the images: the same conv kernels
    assert torch.equal(tiles[2:5], expected[2:5])
    one = TileSet(images, grid, position=4)
    assert len(one) == 3 and torch.equal(one[torch.tensor([2])], expected[[2 * 6 + 4]])
    sub = tiles.with_subset(torch.tensor([5, 1]))
    assert len(sub) == 2 and torch.equal(sub[0:2], expected[[5, 1]])
    with pytest.raises(ConfigError, match=r"tiling\.tile_size 256 is larger than the images"):
        TileSet(images, TileGrid(100, 130, 256, 128))


def _config(**tiling: object) -> dict:
    return {"category": "c", "data": "d", "model": "stfpm", "tiling": tiling}


def test_tiling_settings_are_checked() -> None:
    config = validate_config(_config(tile_size=256))
    assert config.tiling.enabled and config.tiling.step == 192 and config.eval_size == 256 and config.data_size is None
    assert validate_config(_config(tile_size=256, image_size=512)).data_size == 512
    assert not validate_config(_config()).tiling.enabled
    for bad, message in [
        (_config(stride=64), "tiling.stride needs tiling.tile_size"),
        (_config(tile_size=128, stride=200), "stride 200 is larger than tile_size 128"),
        (_config(tile_size=256, image_size=128), "image_size 128 is smaller than tile_size 256"),
        (_config(tile_size=128, mode="per_position", position=-1), "greater than or equal to 0"),
        ({**_config(tile_size=128), "crop_size": 100}, "crop_size and tiling.tile_size do not combine"),
        (_config(tile_size=128, mode="sliding"), "tiling.mode"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config(bad)


def test_own_resolution_loading_keeps_sizes_and_needs_one_size(tmp_path) -> None:
    from PIL import Image

    from adkd.pipelines.data.dataset import clear_cache, load_category
    from adkd.pipelines.data.synthetic_dataset import synthesize

    synthesize(tmp_path, ["weave"], size=48, n_train=4, n_test=3, seed=0)
    clear_cache()
    data = load_category(tmp_path, "weave", image_size=None, val_fraction=0)
    assert data.train.shape[-2:] == data.test_masks.shape[-2:] == (48, 48)  # masks at the images' own size
    Image.new("RGB", (64, 48)).save(tmp_path / "weave" / "train" / "good" / "wide.png")
    clear_cache()
    with pytest.raises(ConfigError, match=r"2 sizes, 48x48\.\.64x48.*set tiling\.image_size"):
        load_category(tmp_path, "weave", image_size=None, val_fraction=0)


def test_epochs_see_a_seeded_subset_and_the_cache_holds_tiles_only_when_all_are_used() -> None:
    from adkd.pipelines.train.runtime import epoch_order
    from adkd.pipelines.train.tiled import cache_allowed, limit_epoch

    config = validate_config(_config(tile_size=64, max_tiles_per_epoch=5))
    tiles = TileSet(torch.zeros((3, 3, 100, 130), dtype=torch.uint8), TileGrid(100, 130, 64, 48))  # 18 tiles
    first, second = limit_epoch(epoch_order(18, 0, 0), config), limit_epoch(epoch_order(18, 0, 1), config)
    assert len(first) == len(second) == 5 and not torch.equal(first, second)  # a new subset each epoch
    assert torch.equal(first, limit_epoch(epoch_order(18, 0, 0), config))  # seeded: the same on a rerun
    notes: list[str] = []
    assert not cache_allowed(config, tiles, notes) and "epochs see 5 of 18 tiles" in notes[0]
    with pytest.raises(ConfigError, match=r"raise tiling\.max_tiles_per_epoch to 18"):
        cache_allowed(config.model_copy(update={"teacher_cache": True}), tiles, [])
    everything = validate_config(_config(tile_size=64))
    assert cache_allowed(everything, tiles, notes) and len(limit_epoch(epoch_order(18, 0, 0), everything)) == 18


def test_tiled_eval_stitches_in_float32_under_bf16_autocast() -> None:
    from adkd.models.zoo import build_model
    from adkd.pipelines.tiling.model import TiledModel

    torch.manual_seed(0)
    tiled = TiledModel(build_model("stfpm", backbone="mobilenet_v2", weights="none"), 64, 48).eval()
    images = torch.randn(2, 3, 100, 130)
    with torch.inference_mode():
        ref_map, ref_score = tiled(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amap, score = tiled(images)
    assert amap.dtype == score.dtype == torch.float32 and amap.shape == (2, 1, 100, 130)
    assert torch.allclose(score, ref_map.amax(dim=(1, 2, 3)), rtol=0.05)  # the score is the stitched map's max
    assert torch.corrcoef(torch.stack([amap.flatten(), ref_map.flatten()]))[0, 1] > 0.99
    assert torch.equal(ref_score, ref_map.amax(dim=(1, 2, 3)))
