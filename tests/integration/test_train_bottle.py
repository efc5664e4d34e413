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


# rd clears the bars after 3 epochs (98.4 / 97.5 / AUPRO 89.6 measured); mrkd needs the preset's 10
# (3 epochs: pixel AUROC 87.8, 5 epochs: 87.5, 10 epochs: 98.6).
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
    assert m["test/image_auroc"] >= 0.90, m
    assert m["test/pixel_auroc"] >= 0.90, m
    assert m["test/aupro"] > 0.5, m
