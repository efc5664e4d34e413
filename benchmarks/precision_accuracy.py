"""Accuracy and speed of a training in fp32 against bf16 autocast + channels-last, same seed and data.

    .venv/bin/python benchmarks/precision_accuracy.py [MODEL=stfpm] [BACKBONE=mobilenet_v2] [EPOCHS=10]

The real bottle (../shared/data/mvtec_ad_256) at 256 px, batch 8, 2 threads; mobilenet_v2 uses the ImageNet
teacher in ../shared/weights, other backbones random weights. Prints the test-split metrics and the median
training images/s (epochs 2+) of each. This is the check behind the CPU default (bf16 + channels-last where
bf16 is native): the metrics must not move.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile

from bottle_runs import bottle_config

from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
from adkd.pipelines.train.engine import train_category


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "stfpm"
    backbone = sys.argv[2] if len(sys.argv) > 2 else "mobilenet_v2"
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    for amp in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            config = bottle_config(model, backbone, epochs, tmp, amp=amp, channels_last=amp)
            result = train_category(config)
            if result.status != "FINISHED":
                raise SystemExit(result.error)
            _, _, meta = load_model_from_checkpoint(result.checkpoint_path)
        rates = [h["train/images_per_s"] for h in meta["history"] if "train/images_per_s" in h]
        row = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("test/")}
        row["train_images_per_s"] = round(statistics.median(rates[1:] or rates), 2)
        print("bf16 + channels-last" if amp else "fp32", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
