"""Two ways tried to run adkd's fp32 graphs faster in ONNX Runtime, each timed against the exported graph as it is.

    .venv/bin/python benchmarks/ort_variants.py [--rounds 40] [--threads 2] [--tag cpu2]

- ``shuffle``: the decoder's k=s transposed convolutions (rd, mrkd) with the BatchNorm after them folded in,
  written as a 1x1 convolution to ``factor**2`` times the channels and a pixel shuffle (ONNX DepthToSpace): the
  same arithmetic (maps agree to about 1e-6), in the convolution kernel ONNX Runtime optimises most.
- ``parallel``: ONNX Runtime's parallel executor (branches of the graph at once: stfpm's teacher and student
  are independent) with 1 or 2 threads per operator and 2 for the branches.

Random 256 px uint8 images at batch 1, ResNet18 (rd, mrkd; random weights, BatchNorm statistics drawn so the fold
is not the identity) and the ImageNet MobileNetV2 of ../shared (stfpm). Sessions alternate each round; the
figure is the median ms/image and the ratio to the graph as exported. Issue 25's inference target, see the
section this writes in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
THRESHOLDS = {"image": 1.0, "pixel": 1.0, "score_min": 0.0, "score_max": 2.0}


class ShuffleUp(nn.Module):
    """A k=s transposed convolution followed by eval-mode BatchNorm, as a 1x1 convolution and a pixel shuffle."""

    def __init__(self, deconv: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        f = deconv.stride[0]
        w = deconv.weight.detach()  # [in, out, f, f]; out channel o at offset (a, b) -> o * f * f + a * f + b
        cin, cout = w.shape[:2]
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        shift = (bn.bias - bn.running_mean * scale).detach()
        self.conv = nn.Conv2d(cin, cout * f * f, 1)
        self.conv.weight.data = w.permute(1, 2, 3, 0).reshape(cout * f * f, cin, 1, 1) * scale.repeat_interleave(
            f * f
        ).view(-1, 1, 1, 1)
        self.conv.bias.data = shift.repeat_interleave(f * f)
        self.factor = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.factor)


def shuffled(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose de-ResNet transposed convolutions (and their BatchNorms) are ``ShuffleUp``."""
    from adkd.models.components.de_resnet import DeBasicBlock, DeBottleneck

    model = copy.deepcopy(model)
    for block in [m for m in model.modules() if isinstance(m, (DeBasicBlock, DeBottleneck))]:
        up = "conv1" if isinstance(block, DeBasicBlock) else "conv2"
        bn = "bn1" if up == "conv1" else "bn2"
        if isinstance(getattr(block, up), nn.ConvTranspose2d):
            setattr(block, up, ShuffleUp(getattr(block, up), getattr(block, bn)))
            setattr(block, bn, nn.Identity())
        if isinstance(block.upsample, nn.Sequential) and isinstance(block.upsample[0], nn.ConvTranspose2d):
            block.upsample = ShuffleUp(block.upsample[0], block.upsample[1])
    return model.eval()


def build(name: str) -> nn.Module:
    from bottle_runs import MOBILENET_WEIGHTS

    from adkd.models.zoo import build_model

    torch.manual_seed(0)
    if name == "stfpm":
        return build_model(name, backbone="mobilenet_v2", weights=str(MOBILENET_WEIGHTS)).eval()
    model = build_model(name, backbone="resnet18", weights="none").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    return model


def sessions(path: Path, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    def make(intra: int, parallel: bool) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra
        if parallel:
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            opts.inter_op_num_threads = threads
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    return {"parallel, 1 thread per op": make(1, True), f"parallel, {threads} per op": make(threads, True)}


def time_sessions(named: dict[str, Any], image: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms/image per session, the sessions taking turns (order flipped every round)."""
    feed = {next(iter(named.values())).get_inputs()[0].name: image}
    for s in named.values():
        for _ in range(3):
            s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in named}
    for r in range(rounds):
        for key in list(named) if r % 2 else list(named)[::-1]:
            t0 = time.perf_counter()
            named[key].run(None, feed)
            times[key].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) / len(image) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="", help="Write results/ort_variants-<tag>.json and a RESULTS.md section.")
    args = p.parse_args()
    import onnxruntime as ort

    from adkd.pipelines.export.onnx_export import export_onnx

    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("rd", "mrkd", "stfpm"):
            model = build(name)
            graphs = {"as exported": export_onnx(model, Path(tmp) / f"{name}.onnx", 256, THRESHOLDS, {"model": name})}
            if name != "stfpm":
                graphs["shuffle"] = export_onnx(shuffled(model), Path(tmp) / f"{name}_shuffle.onnx", 256, THRESHOLDS)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            cpu = ["CPUExecutionProvider"]
            named = {k: ort.InferenceSession(str(v), opts, providers=cpu) for k, v in graphs.items()}
            named.update(sessions(graphs["as exported"], args.threads))
            outs = {k: s.run(None, {s.get_inputs()[0].name: image})[0] for k, s in named.items()}
            diff = max(float(np.abs(o - outs["as exported"]).max()) for o in outs.values())
            ms = time_sessions(named, image, args.rounds)
            for key, value in ms.items():
                rows.append({"model": name, "variant": key, "ms": value, "ratio": value / ms["as exported"]})
                print(f"{name:6s} {key:26s} {value:7.2f} ms  {value / ms['as exported']:.3f}x", flush=True)
            print(f"{name:6s} largest map difference to the graph as exported: {diff:.2g}", flush=True)
            rows.append({"model": name, "variant": "max map difference", "value": diff})
    if not args.tag:
        return
    from results_md import RESULTS_DIR, write_section

    load = " / ".join(f"{x:.1f}" for x in load_before) + " before, " + " / ".join(f"{x:.1f}" for x in os.getloadavg())
    (RESULTS_DIR / f"ort_variants-{args.tag}.json").write_text(json.dumps({"rows": rows, "load": load}, indent=2))
    lines = [
        "### Two fp32 graph variants tried in ONNX Runtime",
        "",
        f"Batch 1, 256 px, {args.threads} threads, {args.rounds} alternating rounds, median; load {load} after "
        f"(`benchmarks/ort_variants.py --tag {args.tag}`):",
        "",
        "| model | variant | ms/image | x as exported |",
        "|---|---|---|---|",
        *(f"| {r['model']} | {r['variant']} | {r['ms']:.2f} | {r['ratio']:.3f} |" for r in rows if "ms" in r),
    ]
    write_section(f"ort_variants-{args.tag}", "\n".join(lines))


if __name__ == "__main__":
    main()
