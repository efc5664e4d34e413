"""A tiled run asks Ray for the memory its full-resolution images take; more than the cluster has is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train.presets import resolve_config
from adkd.platform.cluster.resources import check_memory, memory_request


def test_tiled_runs_request_their_images_memory(tmp_path: Path) -> None:
    synthesize(tmp_path, ["weave"], size=64, n_train=5, n_test=4, seed=0)

    def config(*sets: str):
        return resolve_config("stfpm", "cpu-smoke", category="weave", data=str(tmp_path), overrides=list(sets))

    assert memory_request(config()) == {}  # untiled: squashed images, nothing asked beyond CPUs
    own = memory_request(config("tiling.tile_size=32"))["memory"]
    assert own == 64 * 64 * (5 * 3 * 2 + 4 * 4)  # train twice (category and split), test images and masks
    assert memory_request(config("tiling.tile_size=32", "tiling.image_size=128"))["memory"] == 4 * own
    check_memory([config("tiling.tile_size=32")], {"memory": own + 1})
    with pytest.raises(ConfigError, match=r"weave: its images at full resolution need .* set tiling\.image_size"):
        check_memory([config("tiling.tile_size=32")], {"memory": own - 1})
