"""Issue 4 acceptance on real data: rd and mrkd learn MVTec AD bottle with the real ImageNet teacher.

Needs the shared read-only data and weights beside the repository (../shared); skipped without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DATA = SHARED / "data" / "mvtec_ad_256"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "bottle" / "train").is_dir() or not WEIGHTS.is_file(),
        reason=f"real bottle data ({DATA}) or MobileNetV2 weights ({WEIGHTS}) not present",
    ),
]


# Floors per model, below the worst of 10 runs per model of these exact configurations (`benchmarks/learning_floors.py`,
# benchmarks/RESULTS.md "Learning-test floors"): seeds 0-2 and seed 0 under the default and AVX2 kernels, each in
# the default precision of this CPU (bf16) and in fp32 (the default where bf16 is not native). Worst image /
# pixel AUROC / AUPRO measured: rd (4 epochs) 97.86 / 97.52 / 89.40, mrkd (10 epochs) 99.29 / 98.53 / 93.40.
FLOORS = {
    "rd": {"test/image_auroc": 0.95, "test/pixel_auroc": 0.95, "test/aupro": 0.85},
    "mrkd": {"test/image_auroc": 0.97, "test/pixel_auroc": 0.96, "test/aupro": 0.90},
}


@pytest.mark.parametrize(("model", "epochs"), [("rd", 4), ("mrkd", 10)])
def test_bottle_with_real_teacher(tmp_path: Path, model: str, epochs: int) -> None:
    config = resolve_config(
        model,
        "bottle-mobilenet",
        "bottle",
        str(DATA.resolve()),
        [f"weights={WEIGHTS.resolve()}", f"out_dir={tmp_path}", "num_threads=1", f"epochs={epochs}"],
    )
    assert config.image_size == 128 and config.backbone == "mobilenet_v2"
    result = train_category(config)
    assert result.status == "FINISHED", result.error
    m = result.metrics
    print(f"{model} bottle: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())))
    for key, floor in FLOORS[model].items():
        assert m[key] >= floor, (key, m)
