"""adkd against anomalib at equal settings, back to back: train images/s and inference ms/image.

    .venv/bin/python benchmarks/vs_anomalib.py --setup-anomalib        # once: creates benchmarks/.venv-anomalib
    .venv/bin/python benchmarks/vs_anomalib.py [--runs rd,stfpm] [--threads 2] [--tag cpu2]
    .venv/bin/python benchmarks/vs_anomalib.py --adkd-only --epochs 1 --size 64   # a quick check of adkd's side

Runs (``--data`` default ../shared/data/mvtec_ad_256, category bottle, batch 8, torch threads ``--threads``):
- ``rd``: Reverse Distillation, ResNet18 teacher with random weights, 256 px, 3 epochs;
- ``stfpm``: STFPM, MobileNetV2 teacher (adkd: the ImageNet weights in ../shared/weights; anomalib: timm's
  ``mobilenetv2_100`` with random weights, since nothing can be fetched offline and the speed does not depend
  on them), 256 px, 10 epochs. adkd runs with its defaults (bf16 autocast and channels-last where bf16 is
  native, the teacher feature cache).
Train images/s is the median over epochs 2+ (epoch 1 carries the warm-up and, for adkd, the teacher cache).
Inference ms/image at batch 1 and 8: PyTorch eager on the whole graph (adkd: ``ExportGraph``, uint8 in;
anomalib: its torch model on a normalised tensor), ONNX Runtime fp32, and adkd's int8 (QDQ, calibrated on
the validation images; anomalib ships no ONNX Runtime int8). anomalib lives in its own venv (never a
dependency of adkd); each adkd run is followed by the matching anomalib run. Writes
benchmarks/results/vs_anomalib-<tag>.json and a RESULTS.md section with the ratios and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
ANOMALIB_VENV = REPO / "benchmarks" / ".venv-anomalib"
ANOMALIB_VERSION = "2.7.0"
SHARED = REPO.parent / "shared"
RUNS = {
    "rd": {"model": "rd", "backbone": "resnet18", "weights": "none", "epochs": 3, "anomalib": "rd"},
    "stfpm": {
        "model": "stfpm",
        "backbone": "mobilenet_v2",
        "weights": str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"),
        "epochs": 10,
        "anomalib": "stfpm",
    },
}


# --------------------------------------------------------------------------- anomalib side (its own venv)

_ANOMALIB_SCRIPT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import timm
    import torch

    # Offline: timm cannot fetch ImageNet weights here, and the step time does not depend on them.
    _create_model = timm.create_model
    def _random_weights(*a, **k):
        k["pretrained"] = False
        return _create_model(*a, **k)
    timm.create_model = _random_weights
    from lightning.pytorch.callbacks import Callback
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import ReverseDistillation, Stfpm

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])

    class EpochClock(Callback):
        def __init__(self):
            self.rates, self.t0, self.n = [], 0.0, 0
        def on_train_epoch_start(self, trainer, module):
            self.t0, self.n = time.perf_counter(), 0
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.n += len(batch.image)
        def on_train_epoch_end(self, trainer, module):
            self.rates.append(self.n / (time.perf_counter() - self.t0))

    if args["model"] == "rd":
        model = ReverseDistillation(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2", "layer3"])
    else:
        model = Stfpm(backbone="mobilenetv2_100", layers=["blocks.1", "blocks.2", "blocks.4"])
    data = MVTecAD(root=args["root"], category=args["category"], train_batch_size=args["batch"],
                   eval_batch_size=args["batch"], num_workers=0)
    clock = EpochClock()
    engine = Engine(max_epochs=args["epochs"], accelerator="cpu", devices=1, callbacks=[clock], logger=False,
                    num_sanity_val_steps=0, check_val_every_n_epoch=10**6)
    engine.fit(model=model, datamodule=data)
    out = {"epoch_images_per_s": clock.rates, "train_images_per_s": statistics.median(clock.rates[1:] or clock.rates)}

    torch_model = model.model.eval()
    for batch in (1, 8):
        x = torch.randn(batch, 3, args["size"], args["size"])
        with torch.inference_mode():
            torch_model(x); torch_model(x)
            times = []
            for _ in range(args["repeats"]):
                t0 = time.perf_counter(); torch_model(x); times.append(time.perf_counter() - t0)
        out[f"eager_b{batch}_ms"] = 1000 * statistics.median(times) / batch
    try:
        import onnxruntime as ort
        path = engine.export(model=model, export_type="onnx", export_root=args["export_root"])
        opts = ort.SessionOptions(); opts.intra_op_num_threads = args["threads"]
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for batch in (1, 8):
            feed = {name: torch.rand(batch, 3, args["size"], args["size"]).numpy()}
            sess.run(None, feed); sess.run(None, feed)
            times = []
            for _ in range(args["repeats"]):
                t0 = time.perf_counter(); sess.run(None, feed); times.append(time.perf_counter() - t0)
            out[f"ort_b{batch}_ms"] = 1000 * statistics.median(times) / batch
    except Exception as exc:  # a failed export still leaves the training figures
        out["ort_error"] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(out))
    """
)


def setup_anomalib() -> None:
    """Create the separate venv with anomalib (package registries only: its teachers run with random weights)."""
    py = ANOMALIB_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANOMALIB_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"anomalib=={ANOMALIB_VERSION}", "onnx", "onnxscript", "onnxruntime"],
        check=True,
    )
    print(f"anomalib {ANOMALIB_VERSION} ready in {ANOMALIB_VENV}")


def run_anomalib(run: str, args: argparse.Namespace) -> dict[str, Any]:
    py = ANOMALIB_VENV / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"no anomalib venv at {ANOMALIB_VENV}: run `benchmarks/vs_anomalib.py --setup-anomalib` once")
    spec = RUNS[run]
    with tempfile.TemporaryDirectory() as tmp:
        payload = {
            "model": spec["anomalib"],
            "root": str(Path(args.data)),
            "category": args.category,
            "batch": args.batch,
            "epochs": args.epochs or spec["epochs"],
            "size": args.size,
            "threads": args.threads,
            "repeats": args.repeats,
            "export_root": tmp,
        }
        proc = subprocess.run(
            [str(py), "-c", _ANOMALIB_SCRIPT, json.dumps(payload)], capture_output=True, text=True, cwd=tmp
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(lines[-1].removeprefix("RESULT "))


# --------------------------------------------------------------------------- adkd side


def run_adkd(run: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    import torch
    from bottle_runs import bottle_config
    from inference import _median_ms_per_image

    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.export.onnx_export import ExportGraph, export_onnx
    from adkd.pipelines.export.quantize import quantize_onnx
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category

    spec = RUNS[run]
    config = bottle_config(
        spec["model"], spec["backbone"], args.epochs or spec["epochs"], out_dir / run,
        data=args.data, category=args.category, size=args.size, threads=args.threads,
        batch_size=args.batch, weights=args.weights if spec["weights"] != "none" else "none",
    )  # fmt: skip
    result = train_category(config)
    if result.status != "FINISHED":
        return {"error": result.error}
    model, _, meta = load_model_from_checkpoint(result.checkpoint_path)
    rates = [h["train/images_per_s"] for h in meta["history"] if "train/images_per_s" in h]
    out: dict[str, Any] = {
        "epoch_images_per_s": rates,
        "train_images_per_s": statistics.median(rates[1:] or rates),
        "test": {k: v for k, v in result.metrics.items() if k.startswith("test/")},
        "notes": result.notes,
    }
    graph = ExportGraph(model, args.size, meta["thresholds"]).eval()
    fp32 = export_onnx(model, out_dir / run / "model.onnx", args.size, meta["thresholds"], {"model": run})
    data = load_category(Path(args.data), args.category, args.size, val_fraction=config.val_fraction, seed=config.seed)
    val = data.val.permute(0, 2, 3, 1).contiguous().numpy()
    int8, gate = quantize_onnx(fp32, val, enforce_gate=False, threshold_quantile=config.threshold_quantile)
    out["int8_gate"] = gate.to_dict()
    import onnxruntime as ort

    from adkd.pipelines.evaluate.report import score_test_split, test_metrics
    from adkd.pipelines.predict import open_predictor

    out["onnx_test"] = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        maps, scores, valid = score_test_split(open_predictor(path), data, args.size, "stretch", args.size)
        out["onnx_test"][name] = test_metrics(maps, scores, data, valid)
    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in
                (("ort", fp32), ("int8", int8))}  # fmt: skip
    for batch in (1, 8):
        images = np.random.default_rng(0).integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
        tensor = torch.from_numpy(images)

        def eager(t: torch.Tensor = tensor) -> None:
            with torch.inference_mode():
                graph(t)

        out[f"eager_b{batch}_ms"] = _median_ms_per_image(eager, batch, args.repeats)
        for key, session in sessions.items():
            feed = {session.get_inputs()[0].name: images}
            out[f"{key}_b{batch}_ms"] = _median_ms_per_image(
                lambda s=session, f=feed: s.run(None, f), batch, args.repeats
            )
    return out


# --------------------------------------------------------------------------- report


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) and b > 0 else "-"


def table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"adkd vs anomalib {ANOMALIB_VERSION}, {meta['machine']}, {meta['threads']} torch threads, "
        f"{meta['size']} px, batch {meta['batch']}, load {meta['load']} (`{meta['command']}`):",
        "",
        "| run | metric | adkd | anomalib | adkd / anomalib |",
        "|---|---|---|---|---|",
    ]
    keys = [("train_images_per_s", "train img/s (median epochs 2+)")]
    kinds = (("eager", "PyTorch eager"), ("ort", "ONNX Runtime fp32"), ("int8", "ONNX Runtime int8"))
    keys += [(f"{k}_b{b}_ms", f"{label} ms/image, batch {b}") for k, label in kinds for b in (1, 8)]
    for run, res in results.items():
        a, b = res.get("adkd", {}), res.get("anomalib", {})
        for key, label in keys:
            va, vb = a.get(key), b.get(key)
            fa = f"{va:.2f}" if isinstance(va, float) else "-"
            fb = f"{vb:.2f}" if isinstance(vb, float) else "-"
            lines.append(f"| {run} | {label} | {fa} | {fb} | {_ratio(va, vb)} |")
        for batch in (1, 8):  # each tool's default inference path: adkd ONNX Runtime, anomalib PyTorch (Lightning)
            va, vb = a.get(f"ort_b{batch}_ms"), b.get(f"eager_b{batch}_ms")
            if isinstance(va, float) and isinstance(vb, float):
                label = f"adkd ONNX Runtime fp32 / anomalib PyTorch eager, batch {batch}"
                lines.append(f"| {run} | {label} | {va:.2f} | {vb:.2f} | {_ratio(va, vb)} |")
        if isinstance(a.get("int8_b1_ms"), float) and isinstance(a.get("ort_b1_ms"), float):
            lines.append(f"| {run} | adkd int8 / fp32 ONNX, batch 1 | | | {a['int8_b1_ms'] / a['ort_b1_ms']:.2f} |")
        for name, metrics in (a.get("onnx_test") or {}).items():
            shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k in ("image_auroc", "pixel_auroc"))
            lines.append(f"| {run} | test split, adkd ONNX {name} | {shown} | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup-anomalib", action="store_true", help="create the anomalib venv and exit")
    p.add_argument("--runs", default="rd,stfpm")
    p.add_argument("--data", default=str(SHARED / "data" / "mvtec_ad_256"))
    p.add_argument("--category", default="bottle")
    p.add_argument("--weights", default=RUNS["stfpm"]["weights"], help="MobileNetV2 ImageNet state dict (stfpm)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="override every run's epochs (quick checks)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--adkd-only", action="store_true")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    if args.setup_anomalib:
        setup_anomalib()
        return
    import torch
    from train_speed import write_section

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs.split(","):
            results[run] = {"adkd": run_adkd(run, args, Path(tmp))}
            print(run, "adkd", json.dumps(results[run]["adkd"], default=str)[:2000], flush=True)
            if not args.adkd_only:
                results[run]["anomalib"] = run_anomalib(run, args)
                print(run, "anomalib", json.dumps(results[run]["anomalib"])[:2000], flush=True)
    meta = {
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "size": args.size,
        "batch": args.batch,
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "benchmarks/vs_anomalib.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"vs_anomalib-{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    text = table(results, meta)
    if not args.adkd_only and args.epochs is None:
        write_section(f"vs_anomalib-{args.tag}", text)
    print(text)


if __name__ == "__main__":
    main()
