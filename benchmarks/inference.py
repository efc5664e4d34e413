"""Inference speed: PyTorch eager against ONNX Runtime on the same exported graph, this CPU.

    .venv/bin/python benchmarks/inference.py [--size 128] [--backbone resnet18] [--repeats 10]

Both sides run the whole graph adkd ships: uint8 NHWC images in (resize and normalisation inside),
anomaly map, image score and normalised score out; the same thread count for both. Random teacher
weights (speed does not depend on them). Batch 1 and 8 per model, measured in one run, median
milliseconds per image. Writes benchmarks/results/inference-<tag>.json and a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adkd.models.zoo import build_model
from adkd.pipelines.export.onnx_export import ExportGraph, export_onnx

MODELS = ("rd", "mrkd", "stfpm", "stfpm-ae")
THRESHOLDS = {"image": 1.0, "pixel": 1.0, "score_min": 0.0, "score_max": 2.0}


def _median_ms_per_image(fn, batch: int, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / batch


def measure(model_name: str, backbone: str, size: int, batches: tuple[int, ...], repeats: int, threads: int) -> list:
    import onnxruntime as ort

    options = {"image_size": size} if model_name == "stfpm-ae" else {}
    model = build_model(model_name, backbone=backbone, weights="none", **options).eval()
    graph = ExportGraph(model, size, THRESHOLDS).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "m.onnx", size, THRESHOLDS, {"model": model_name})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in batches:
            images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
            feed = {name: images.numpy()}

            def run_torch(images: torch.Tensor = images) -> None:
                with torch.inference_mode():
                    graph(images)

            def run_ort(feed: dict = feed) -> None:
                session.run(None, feed)

            torch_ms = _median_ms_per_image(run_torch, batch, repeats)
            ort_ms = _median_ms_per_image(run_ort, batch, repeats)
            rows.append(
                {
                    "model": model_name,
                    "backbone": backbone,
                    "size": size,
                    "batch": batch,
                    "torch_ms_per_image": torch_ms,
                    "ort_ms_per_image": ort_ms,
                    "ort_over_torch": ort_ms / torch_ms,
                }
            )
            print(f"{model_name:9s} b{batch}: torch {torch_ms:8.2f} ms/img  ort {ort_ms:8.2f} ms/img  "
                  f"ratio {ort_ms / torch_ms:.2f}", flush=True)  # fmt: skip
    return rows


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Inference, {meta['machine']}, {meta['threads']} threads, {meta['size']} px, {meta['backbone']}, "
        f"median of {meta['repeats']} (`{meta['command']}`):",
        "",
        "| model | batch | PyTorch eager ms/image | ONNX Runtime ms/image | ORT / PyTorch |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['torch_ms_per_image']:.2f} | {r['ort_ms_per_image']:.2f} | "
            f"{r['ort_over_torch']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        rows += measure(name, args.backbone, args.size, (1, 8), args.repeats, args.threads)
    meta = {
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "threads": args.threads,
        "size": args.size,
        "backbone": args.backbone,
        "repeats": args.repeats,
        "command": f"benchmarks/inference.py --size {args.size} --backbone {args.backbone}",
    }
    tag = f"{args.backbone}-{args.size}"
    from results_md import write_results, write_section  # benchmarks/ is on sys.path when run

    write_results(f"inference-{tag}", {"meta": meta, "rows": rows})
    text = table(rows, meta)
    write_section(f"inference-{tag}", text)
    print(text)


if __name__ == "__main__":
    main()
