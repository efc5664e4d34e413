"""Per-position tiling trains its tile positions in parallel on the embedded Ray, then ships one model.

One `adkd train` of a synthetic aligned part (chip, 64 px) with 32 px tiles: four positions, one Ray run each,
as categories are trained; the assembled model is evaluated and exported whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_positions_train_in_parallel_on_ray_and_ship_one_model(tmp_path: Path) -> None:
    import ray

    import adkd
    from adkd.pipelines.data.synthetic_dataset import synthesize
    from adkd.pipelines.export.onnx_export import read_metadata

    assert not ray.is_initialized()
    synthesize(tmp_path / "data", ["chip"], size=64, n_train=8, n_test=6, seed=0)
    tiling = ["tiling.tile_size=32", "tiling.stride=32", "tiling.mode=per_position"]
    try:
        result = adkd.train("chip", tmp_path / "data", "stfpm", preset="cpu-smoke", overrides=["epochs=1", *tiling],
                            out=tmp_path / "runs", tracking=False)  # fmt: skip
    finally:
        ray.shutdown()  # the embedded Ray this run started
    assert result.status == "FINISHED", result.error
    run_dir = tmp_path / "runs" / "stfpm" / "chip"
    ran = json.loads((run_dir / "positions" / "positions.json").read_text())
    assert ran["positions"] == 4 and ran["most_at_once"] >= 2  # the embedded Ray's 2 CPUs: two at a time
    outputs = sorted(p.parent.name for p in Path(ran["run_dir"]).glob("chip-pos*/model.pt"))
    assert outputs == [f"chip-pos{i:03d}" for i in range(4)]
    assert any("4 positions trained on Ray" in note for note in result.notes)
    assert {"test/image_auroc", "test/aupro", "test_torch/aupro"} <= set(result.metrics)
    meta = read_metadata(run_dir / "model.onnx")
    assert meta["tiling"]["mode"] == "per_position" and meta["tiling"]["positions"] == 4
    image = np.full((80, 100, 3), 120, dtype=np.uint8)  # another size: brought to 64x64, mapped back
    pred = adkd.load(run_dir / "model.onnx").predict(image)[0]
    assert pred.anomaly_map.shape == (80, 100) and np.isfinite(pred.anomaly_map).all()


def test_per_position_model_records_the_options_its_positions_were_built_with(tmp_path: Path) -> None:
    """stfpm-ae sizes its autoencoders by model_options.image_size, which a tiled run resolves to the tile: at 32 px
    each position has 2/1/0 U-Net stages, and the assembled model.pt must say 32 to be rebuilt (not the builder's
    256, which rebuilds 3/3/3 stages and fails the strict load)."""
    from adkd.pipelines.data.synthetic_dataset import synthesize
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category
    from adkd.pipelines.train.presets import resolve_config

    synthesize(tmp_path / "data", ["chip"], size=64, n_train=8, n_test=4, seed=0)
    overrides = [
        "epochs=1", "model_options.ae_pretrain_epochs=0", "tiling.tile_size=32", "tiling.stride=32",
        "tiling.mode=per_position", "export_onnx=false", "evaluate_test=false", f"out_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    config = resolve_config("stfpm-ae", "cpu-smoke", "chip", str(tmp_path / "data"), overrides)
    assert "image_size" not in config.model_options  # left to the run: the tile side
    result = train_category(config)
    assert result.status == "FINISHED", result.error
    assert result.config["model_options"]["image_size"] == 32 and result.config["backbone"] == "mobilenet_v2"
    model, loaded, meta = load_model_from_checkpoint(result.checkpoint_path)
    assert loaded.model_options["image_size"] == 32 and meta["tiling"]["positions"] == 4
    assert [m.ae_stages for m in model.models] == [(2, 1, 0)] * 4
