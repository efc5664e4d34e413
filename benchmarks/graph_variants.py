"""Ways tried to run adkd's exported graphs faster on the CPU, each timed against the graph as adkd exports it.

    .venv/bin/python benchmarks/graph_variants.py [--rounds 8] [--block 5] [--threads 2] [--tag cpu2]

- ``shuffle``: the decoder's k=s transposed convolutions (rd, mrkd) with the BatchNorm after them folded in,
  written as a 1x1 convolution to ``factor**2`` times the channels and a pixel shuffle (ONNX DepthToSpace): the
  same arithmetic (maps agree to about 1e-6), in the convolution kernel ONNX Runtime optimises most.
- ``parallel``: ONNX Runtime's parallel executor (branches of the graph at once: stfpm's teacher and student
  are independent) with 1 or 2 threads per operator and 2 for the branches.
- ``input resize``: the graph as adkd exported it before 2026-12-07, whose front end resized the images to the
  size they already have (an identity every runtime still executed), in ONNX Runtime and OpenVINO (f32 hint;
  bf16 hint where the CPU has bf16).

Random 256 px uint8 images at batch 1, ResNet18 (rd, mrkd; random weights, BatchNorm statistics drawn so the fold
is not the identity) and the ImageNet MobileNetV2 of ../shared (stfpm). Every runner of a model takes its turn
each round (``time_runners``); the figure is the median ms/image and the ratio to the graph as exported on the
same runtime.
Issue 25's inference target, see the section this writes in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@contextlib.contextmanager
def resizing_front_end() -> Iterator[None]:
    """Export as adkd did before 2026-12-07: the front end resizes to its own size even when the images are."""
    from adkd.models.preprocess import Preprocess

    def forward(self: Preprocess, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) if self.channels_last else images
        x = F.interpolate(x.float() / 255.0, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    saved = Preprocess.forward
    Preprocess.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        Preprocess.forward = saved  # type: ignore[method-assign]


def ort_runner(path: Path, threads: int, parallel_ops: int | None = None) -> Callable[[np.ndarray], Any]:
    """ONNX Runtime on ``path``; ``parallel_ops``: its parallel executor with that many threads per operator."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads if parallel_ops is None else parallel_ops
    if parallel_ops is not None:
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        opts.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})[0]


def ov_runner(path: Path, threads: int, precision: str) -> Callable[[np.ndarray], Any]:
    """OpenVINO on ``path`` with the ``precision`` hint, latency mode, ``threads`` threads."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    return lambda image: request.infer({0: image})[0]


def time_runners(
    runners: dict[tuple[str, str], Callable], image: np.ndarray, rounds: int, block: int
) -> dict[Any, float]:
    """Median ms/image per runner over ``rounds`` rounds of ``block`` timed calls each, after 2 untimed ones.

    Runners take turns by block (order flipped every round), not by call: a runtime's worker threads keep
    spinning for a while after a call, so a call right after another runtime's measures that one's tail.
    """
    times: dict[Any, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for key in list(runners) if r % 2 else list(runners)[::-1]:
            for call in range(2 + block):
                t0 = time.perf_counter()
                runners[key](image)
                if call >= 2:
                    times[key].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) / len(image) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--block", type=int, default=5, help="Timed calls of one runner in a row, per round.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="", help="Write results/graph_variants-<tag>.json and a RESULTS.md section.")
    args = p.parse_args()
    from adkd.pipelines.export.onnx_export import export_onnx
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16

    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    ov_precisions = ("f32", "bf16") if cpu_has_bf16() else ("f32",)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("rd", "mrkd", "stfpm"):
            model = build(name)

            def export(variant: str, net: nn.Module, name: str = name) -> Path:
                return export_onnx(net, Path(tmp) / f"{name}-{variant.replace(' ', '_')}.onnx", 256, THRESHOLDS)

            graphs = {"as exported": export("as exported", model)}
            with resizing_front_end():
                graphs["input resize"] = export("input resize", model)
            if name != "stfpm":
                graphs["shuffle"] = export("shuffle", shuffled(model))
            t = args.threads
            runners = {("onnxruntime", v): ort_runner(g, t) for v, g in graphs.items()}
            runners.update({("onnxruntime", f"parallel, {n} per op"): ort_runner(graphs["as exported"], t, n)
                            for n in (1, t)})  # fmt: skip
            for precision in ov_precisions:
                for variant in ("as exported", "input resize"):
                    runners[(f"openvino {precision}", variant)] = ov_runner(graphs[variant], t, precision)
            reference = runners[("onnxruntime", "as exported")](image)
            diff = max(float(np.abs(np.asarray(run(image)) - reference).max()) for run in runners.values())
            ms = time_runners(runners, image, args.rounds, args.block)
            for (runtime, variant), value in ms.items():
                ratio = value / ms[(runtime, "as exported")]
                rows.append({"model": name, "runtime": runtime, "variant": variant, "ms": value, "ratio": ratio})
                print(f"{name:6s} {runtime:16s} {variant:22s} {value:7.2f} ms  {ratio:.3f}x", flush=True)
            print(f"{name:6s} largest map difference to ONNX Runtime on the graph as exported: {diff:.2g}", flush=True)
    if not args.tag:
        return
    from results_md import load_span, write_results, write_section

    load = load_span(load_before)
    write_results(f"graph_variants-{args.tag}", {"rows": rows, "load": load})
    lines = [
        "### Graph variants tried for CPU inference",
        "",
        f"Batch 1, 256 px, {args.threads} threads, {args.rounds} rounds of {args.block} timed calls per runner "
        f"(runners alternating by block), median; load {load} "
        f"(`benchmarks/graph_variants.py --tag {args.tag}`); x: against the graph as exported, same runtime:",
        "",
        "| model | runtime | variant | ms/image | x as exported |",
        "|---|---|---|---|---|",
        *(f"| {r['model']} | {r['runtime']} | {r['variant']} | {r['ms']:.2f} | {r['ratio']:.3f} |" for r in rows),
    ]
    write_section(f"graph_variants-{args.tag}", "\n".join(lines))


if __name__ == "__main__":
    main()
