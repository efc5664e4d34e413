"""int8 on each CPU runtime against ONNX Runtime fp32: speed at batch 1 and 8 and the test-split AUROCs.

    .venv/bin/python benchmarks/int8_runtimes.py [--runs rd,mrkd] [--epochs 3] [--threads 2] [--tag cpu2]

Each run trains on the real bottle (../shared/data/mvtec_ad_256, 256 px, batch 8, ResNet18 teacher with random
weights: nothing can be fetched offline, and speed does not depend on the weights) with adkd's defaults and
``export_int8=true``, which writes ONNX Runtime's static int8 and NNCF's int8 for OpenVINO, each calibrated and
gated on the validation images, measures the fp32 file in OpenVINO f32 and bf16 under the same gate, and times
every gated variant for ``runtime=auto``. Here every variant is
timed again (``runtime_choice.time_variants``: models alternating over rounds, median) and scored on the test
split through ``open_predictor``. Issue 25's target: int8 <= 0.4x ONNX Runtime fp32 at batch 1, image AUROC
within 0.5 points and pixel AUROC within 1 point. Writes benchmarks/results/int8_runtimes-<tag>.json and a
RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
VARIANTS = ("onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")


def run(model: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from bottle_runs import bottle_config, score_and_time

    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.export.onnx_export import read_metadata
    from adkd.pipelines.predict.runtimes import variant_path
    from adkd.pipelines.train.engine import train_category

    config = bottle_config(model, "resnet18", args.epochs, out / model, data=args.data, size=args.size,
                           threads=args.threads, export_int8=True)  # fmt: skip
    result = train_category(config)
    if result.status != "FINISHED":
        return {"error": result.error}
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16

    # openvino-bf16 is refused on a CPU without bf16 (an AMD EPYC with avx2 alone): timed only where it runs.
    wanted = [v for v in VARIANTS if v != "openvino-bf16" or cpu_has_bf16()]
    files = {v: variant_path(result.onnx_path, v) for v in wanted}
    files = {v: p for v, p in files.items() if p.is_file()}
    data = load_category(Path(args.data), "bottle", args.size, val_fraction=config.val_fraction, seed=config.seed)
    scores, timings = score_and_time(files, data, args.size, args.threads, args.repeats)
    gates = {v: read_metadata(p).get("int8_gate", {}).get("ok") for v, p in files.items() if v.endswith("-int8")}
    # OpenVINO f32/bf16 run the fp32 file: their gates are records in it (adkd.pipelines.predict.variant_records).
    records = read_metadata(result.onnx_path).get("variant_records") or {}
    gates |= {v: r.get("gate", {}).get("ok") for v, r in records.items() if v in files}
    return {
        "timings": timings,
        "test": scores,
        "gates": gates,
        "refusals": {k: v for k, v in result.tags.items() if k.endswith("_refused")},
        "runtime_choice": read_metadata(result.onnx_path).get("runtime_choice", {}).get("variant"),
    }


def table(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"int8 per runtime against ONNX Runtime fp32, bottle {meta['size']} px, ResNet18 teacher (random weights), "
        f"{meta['epochs']} epochs, {meta['threads']} threads, load {meta['load']} (`{meta['command']}`):",
        "",
        "| run | variant | ms/img b1 | ms/img b8 | b1 / ORT fp32 | image AUROC | pixel AUROC | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | |")
            continue
        base = r["timings"]["onnxruntime"]["b1_ms"]
        for variant, t in r["timings"].items():
            m = r["test"].get(variant, {})
            gate = {True: "passed", False: "refused", None: "-"}[r["gates"].get(variant)]
            lines.append(
                f"| {name} | {variant} | {t['b1_ms']:.1f} | {t['b8_ms']:.1f} | {t['b1_ms'] / base:.2f} | "
                f"{100 * m.get('image_auroc', float('nan')):.2f} | {100 * m.get('pixel_auroc', float('nan')):.2f} | "
                f"{gate} |"
            )
        lines.append(f"| {name} | runtime=auto picked | {r['runtime_choice']} | | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="rd,mrkd")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mvtec_ad_256"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tag", default="cpu2")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    from results_md import load_span, write_section

    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs.split(","):
            results[name] = run(name, args, Path(tmp))
            print(name, json.dumps(results[name], default=str)[:2000], flush=True)
    meta = {
        "size": args.size,
        "epochs": args.epochs,
        "threads": args.threads,
        "load": load_span(load_before),
        "command": "benchmarks/int8_runtimes.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"int8_runtimes-{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    text = table(results, meta)
    if args.out == REPO / "benchmarks" / "results":
        write_section(f"int8_runtimes-{args.tag}", "### int8 per CPU runtime\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
