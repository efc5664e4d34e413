"""Small defects on large images: tiles at the images' own resolution beat squashing them to 256 px.

A 1,024 x 1,024 synthetic texture (weave) whose defects cover 0.1-0.4 % of the image (``--defect-scale 0.3``),
two training images, two epochs, stfpm with the real ImageNet MobileNetV2 teacher: trained on 256 px tiles of
the full-resolution images and scored on the stitched maps against the same model trained and scored at 256 px.

The floor comes from seeds 0, 1 and 2 of this setup (data and training seed; CPU, fp32): tiled AUPRO 0.80 / 0.67
/ 0.96 against untiled 0.11 / 0.00 / 0.30, margins 0.69 / 0.67 / 0.66. The test asks for half of the smallest
margin and a tiled AUPRO of at least 0.5. (One epoch gave margins 0.67 / 0.31 / 0.80: too close to call.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WEIGHTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights" / "mobilenet_v2_imagenet_features.pth"
MIN_MARGIN = 0.33  # half the smallest margin over seeds 0-2
MIN_TILED_AUPRO = 0.5


def _aupro(root: Path, out: Path, extra: list[str]) -> float:
    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.evaluate.metrics import compute_metrics
    from adkd.pipelines.inference.runtime import Runtime
    from adkd.pipelines.inference.torch_scoring import predict
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category
    from adkd.pipelines.train.presets import resolve_config
    from adkd.pipelines.train.tiled import eval_model

    # Trained and scored in PyTorch only: the artifact path's agreement with it is tested elsewhere.
    settings = [f"weights={WEIGHTS}", "epochs=2", "val_fraction=0", "evaluate_test=false", "export_onnx=false",
                "skip_validation=true", "num_threads=2", f"out_dir={out}"]  # fmt: skip
    config = resolve_config("stfpm", "cpu-smoke", category="weave", data=str(root), overrides=settings + extra)
    result = train_category(config)
    assert result.status == "FINISHED", result.error
    model, config, _ = load_model_from_checkpoint(result.checkpoint_path)
    data = load_category(root, "weave", image_size=config.data_size, val_fraction=0)
    assert data.test_masks.shape[-1] == (1024 if config.tiling.enabled else 256)  # masks never below the image's size
    maps, scores = predict(eval_model(model, config), data.test, Runtime.from_config(config), 4)
    return compute_metrics(maps, scores, data.test_masks, data.test_labels)["aupro"]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the shared ImageNet MobileNetV2 weights are not present")
def test_tiles_at_native_resolution_beat_256_px_on_small_defects(tmp_path: Path) -> None:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    root = tmp_path / "data"
    synthesize(root, ["weave"], size=1024, n_train=2, n_test=4, seed=0, defect_scale=0.3)
    masks = [np.asarray(Image.open(p)) > 0 for p in (root / "weave").rglob("*_mask.png")]
    assert masks and max(m.mean() for m in masks) < 0.005  # every defect under 0.5 % of the image
    untiled = _aupro(root, tmp_path / "untiled", ["image_size=256"])
    tiled = _aupro(root, tmp_path / "tiled", ["tiling.tile_size=256", "tiling.stride=256"])
    assert tiled >= MIN_TILED_AUPRO and tiled - untiled >= MIN_MARGIN, (tiled, untiled)
