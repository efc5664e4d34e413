"""Each ONNX Runtime int8 scheme of a trained adkd model: speed at batch 1 and 8 and test-split accuracy.

    .venv/bin/python benchmarks/int8_variants.py [--checkpoint RUN/model.pt] [--threads 2] [--tag cpu2]

Without ``--checkpoint`` it first trains stfpm with the ImageNet MobileNetV2 teacher (../shared/weights) on the
real bottle (../shared/data/mvtec_ad_256) at 256 px for 10 epochs, the run of issue 17's acceptance. Each scheme
of ``adkd.pipelines.export.quantize.INT8_SCHEMES`` is quantized the way ``adkd export --int8`` does it
(calibrated and gated on the run's validation images; the gate's verdict is reported, not enforced) and timed
with ``--threads`` intra-op threads in a fresh process, median of ``--repeats`` runs after 2 warm-ups, the
models alternating over 3 rounds (median of rounds), against the fp32 graph.
Writes benchmarks/results/int8_variants-<tag>.json and a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def time_models(paths: dict[str, str], size: int, threads: int, repeats: int, rounds: int = 3) -> dict[str, Any]:
    """ms/image at batch 1 and 8 of each model: median over ``rounds`` rounds that alternate the models."""
    import onnxruntime as ort
    from inference import _median_ms_per_image

    sessions = {}
    for name, path in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sessions[name] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    out: dict[str, dict[str, list[float]]] = {name: {"b1_ms": [], "b8_ms": []} for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            for batch in (1, 8):
                images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                feed = {session.get_inputs()[0].name: images}
                ms = _median_ms_per_image(lambda s=session, f=feed: s.run(None, f), batch, repeats)
                out[name][f"b{batch}_ms"].append(ms)
    return {name: {k: statistics.median(v) for k, v in row.items()} for name, row in out.items()}


def time_in_fresh_process(paths: dict[str, Path], size: int, threads: int, repeats: int) -> dict[str, Any]:
    """Time in a new process: no thread pools or caches left over from training and quantizing."""
    payload = json.dumps({"paths": {k: str(v) for k, v in paths.items()}, "size": size, "threads": threads,
                          "repeats": repeats})  # fmt: skip
    proc = subprocess.run([sys.executable, __file__, "--time", payload], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_reference(out_dir: Path, threads: int) -> Path:
    from bottle_runs import bottle_config

    from adkd.pipelines.train.engine import train_category

    result = train_category(bottle_config("stfpm", "mobilenet_v2", 10, out_dir, threads=threads))
    if result.status != "FINISHED":
        raise SystemExit(f"training failed: {result.error}")
    return Path(result.checkpoint_path)


def main() -> None:
    from adkd.pipelines.export import read_metadata
    from adkd.pipelines.export.quantize import INT8_SCHEMES
    from adkd.pipelines.train.artifacts import export_checkpoint, export_int8_checkpoint

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--run-dir", type=Path, default=None, help="train into this folder (kept) instead of a temp one")
    p.add_argument("--time", default=None, help=argparse.SUPPRESS)  # internal: the fresh timing process
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tag", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    if args.time:
        job = json.loads(args.time)
        print(json.dumps(time_models(job["paths"], job["size"], job["threads"], job["repeats"])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        checkpoint = args.checkpoint or train_reference(args.run_dir or tmp_dir / "run", args.threads)
        fp32 = export_checkpoint(checkpoint, tmp_dir / "model.onnx")
        size = int(read_metadata(fp32)["image_size"])
        rows: dict[str, dict[str, Any]] = {"fp32": {}}
        paths = {"fp32": fp32}
        for scheme in INT8_SCHEMES:
            result = export_int8_checkpoint(
                checkpoint, fp32, tmp_dir / f"{scheme}.onnx", scheme=scheme, enforce_gate=False
            )
            rows["fp32"].setdefault("test", result.test_metrics.get("fp32", {}))
            rows[scheme] = {"gate_ok": result.gate.ok, "gate": result.gate.to_dict()}
            rows[scheme]["test"] = result.test_metrics.get("int8", {})
            paths[scheme] = result.path
            print(scheme, json.dumps({k: v for k, v in rows[scheme].items() if k != "gate"}), flush=True)
        for name, timing in time_in_fresh_process(paths, size, args.threads, args.repeats).items():
            rows[name].update(timing)
            print(name, json.dumps(timing), flush=True)
    meta = {
        "checkpoint": str(args.checkpoint or "stfpm mobilenet_v2 bottle 256 px, 10 epochs (trained here)"),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "benchmarks/int8_variants.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"int8_variants-{args.tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = table(rows, meta)
    from results_md import write_section

    write_section(f"int8_variants-{args.tag}", text)
    print(text)


def table(rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    base = rows["fp32"]
    lines = [
        f"### int8 schemes against fp32 ONNX Runtime ({meta['checkpoint']})",
        "",
        f"{meta['threads']} intra-op threads, {meta['cpus']} CPUs, load {meta['load']} (`{meta['command']}`). "
        "Test split image / pixel AUROC in points; gate: the accuracy gate of `adkd export --int8`.",
        "",
        "| model | ms/image b1 | × fp32 | ms/image b8 | × fp32 | image AUROC | pixel AUROC | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        test = row.get("test", {})
        auc = [f"{100 * test[k]:.2f}" if k in test else "-" for k in ("image_auroc", "pixel_auroc")]
        gate = "-" if name == "fp32" else ("passes" if row["gate_ok"] else "refuses")
        lines.append(
            f"| {name} | {row['b1_ms']:.2f} | {row['b1_ms'] / base['b1_ms']:.2f} | {row['b8_ms']:.2f} | "
            f"{row['b8_ms'] / base['b8_ms']:.2f} | {auc[0]} | {auc[1]} | {gate} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
