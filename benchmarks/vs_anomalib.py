"""adkd against anomalib at its defaults and at its best settings, back to back: train images/s and inference.

    .venv/bin/python benchmarks/vs_anomalib.py --setup-anomalib        # once: creates benchmarks/.venv-anomalib
    .venv/bin/python benchmarks/vs_anomalib.py [--runs rd,stfpm] [--threads 2] [--tag cpu2]
    .venv/bin/python benchmarks/vs_anomalib.py --adkd-only --epochs 1 --size 64   # a quick check of adkd's side

Runs (``--data`` default ../shared/data/mvtec_ad_256, category bottle, batch 8, torch threads ``--threads``):
- ``rd``: Reverse Distillation, ResNet18 teacher with random weights, 256 px;
- ``stfpm``: STFPM, MobileNetV2 teacher (adkd: the ImageNet weights in ../shared/weights; anomalib: timm's
  ``mobilenetv2_100`` with random weights, since nothing can be fetched offline and the speed does not depend
  on them), 256 px.
Each run trains, back to back: adkd with its defaults (bf16 autocast and channels-last where bf16 is native,
the teacher feature cache), adkd without them (fp32, contiguous, no cache), anomalib at its defaults (fp32)
and anomalib with ``precision="bf16-mixed"`` (its one switch for speed), ``--epochs`` each (default 3).
Train images/s is the median over epochs 2+ (epoch 1 carries the warm-up and, for adkd, the teacher cache).
Inference ms/image at batch 1 and 8: PyTorch eager, and every CPU runtime each tool ships for the network:
adkd's ``runtime_choice`` variants (ONNX Runtime fp32 and int8, OpenVINO f32, bf16 and NNCF int8, each int8
calibrated on the validation images; the gates are not enforced, so every variant is timed, and each int8 or
OpenVINO row says whether adkd's gate passed it or would refuse to ship it) and
anomalib's ONNX export (ONNX Runtime) and OpenVINO export (its FP32 IR under the f32 and the bf16 precision
hint, and its NNCF ``INT8_PTQ`` IR), with the test-split AUROCs of adkd's variants. anomalib lives in its own
venv (never a dependency of adkd). Writes benchmarks/results/vs_anomalib-<tag>.json and a RESULTS.md section
with the ratios and the machine's load.
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
    "rd": {"model": "rd", "backbone": "resnet18", "weights": "none", "anomalib": "rd"},
    "stfpm": {
        "model": "stfpm",
        "backbone": "mobilenet_v2",
        "weights": str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"),
        "anomalib": "stfpm",
    },
}
# adkd without its speed settings: what the "adkd fp32, no cache" column trains with.
PLAIN = {"amp": False, "channels_last": False, "teacher_cache": False}


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
                    num_sanity_val_steps=0, check_val_every_n_epoch=10**6, precision=args["precision"])
    engine.fit(model=model, datamodule=data)
    out = {"epoch_images_per_s": clock.rates, "train_images_per_s": statistics.median(clock.rates[1:] or clock.rates)}
    if not args["inference"]:
        print("RESULT " + json.dumps(out))
        sys.exit(0)

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
    try:  # anomalib's recommended CPU deployment: OpenVINO, FP32 IR and NNCF INT8_PTQ
        import numpy as np
        import openvino as ov
        from anomalib.deploy import CompressionType
        core = ov.Core()
        fp32 = engine.export(model=model, export_type="openvino", export_root=args["export_root"] + "/ov32")
        int8 = engine.export(model=model, export_type="openvino", export_root=args["export_root"] + "/ov8",
                             compression_type=CompressionType.INT8_PTQ, datamodule=data)
        cases = (("ov_f32", fp32, {"INFERENCE_PRECISION_HINT": "f32"}), ("ov_bf16", fp32, {}),
                 ("ov_int8", int8, {}))
        for key, path, hint in cases:
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": args["threads"],
                                                             "PERFORMANCE_HINT": "LATENCY", **hint})
            request = compiled.create_infer_request()
            out[f"{key}_hint"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            for batch in (1, 8):
                x = np.random.default_rng(0).random((batch, 3, args["size"], args["size"]), dtype=np.float32)
                request.infer({0: x}); request.infer({0: x})
                times = []
                for _ in range(args["repeats"]):
                    t0 = time.perf_counter(); request.infer({0: x}); times.append(time.perf_counter() - t0)
                out[f"{key}_b{batch}_ms"] = 1000 * statistics.median(times) / batch
    except Exception as exc:
        out["ov_error"] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(out))
    """
)


def setup_anomalib() -> None:
    """Create the separate venv with anomalib (package registries only: its teachers run with random weights).

    The venv sees adkd's venv's packages behind its own (a ``.pth`` file): the same torch, ONNX Runtime and
    OpenVINO builds for both tools (a fair comparison, and no second multi-GB torch download); pip installs
    only what anomalib adds, into the anomalib venv, and leaves adkd's venv untouched.
    """
    import sysconfig

    py = ANOMALIB_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANOMALIB_VENV)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "zz_adkd_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # adkd's venv
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"anomalib=={ANOMALIB_VERSION}"], check=True)
    print(f"anomalib {ANOMALIB_VERSION} ready in {ANOMALIB_VENV}")


def run_anomalib(run: str, args: argparse.Namespace, precision: str = "32", inference: bool = True) -> dict[str, Any]:
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
            "epochs": args.epochs,
            "precision": precision,
            "inference": inference,
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


def train_adkd(run: str, args: argparse.Namespace, out_dir: Path, speed: bool = True) -> tuple[dict[str, Any], Any]:
    """Train ``run`` with adkd's defaults (``speed``) or without its speed settings; (figures, result)."""
    from bottle_runs import bottle_config

    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category

    spec = RUNS[run]
    config = bottle_config(
        spec["model"], spec["backbone"], args.epochs, out_dir / (run if speed else f"{run}-plain"),
        data=args.data, category=args.category, size=args.size, threads=args.threads, batch_size=args.batch,
        weights=args.weights if spec["weights"] != "none" else "none", **({} if speed else PLAIN),
    )  # fmt: skip
    result = train_category(config)
    if result.status != "FINISHED":
        return {"error": result.error}, None
    meta = load_model_from_checkpoint(result.checkpoint_path)[2]
    rates = [h["train/images_per_s"] for h in meta["history"] if "train/images_per_s" in h]
    return {
        "epoch_images_per_s": rates,
        "train_images_per_s": statistics.median(rates[1:] or rates),
        "test": {k: v for k, v in result.metrics.items() if k.startswith("test/")},
        "peak_rss_mb": result.metrics.get("memory/peak_rss_mb"),
        "notes": result.notes,
    }, (result, config)


def run_adkd(run: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """adkd's defaults: training, then every CPU runtime variant of the exported model, timed and scored."""
    import torch
    from bottle_runs import score_and_time
    from inference import _median_ms_per_image

    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.export.float_variants import measure_variant
    from adkd.pipelines.export.onnx_export import ExportGraph
    from adkd.pipelines.export.openvino_int8 import quantize_openvino
    from adkd.pipelines.export.quantize import gate_reference, quantize_onnx
    from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint

    out, trained = train_adkd(run, args, out_dir)
    if trained is None:
        return out
    result, config = trained
    fp32 = result.onnx_path  # exported and scored by the run itself (thresholds fitted on its own scores)
    data = load_category(Path(args.data), args.category, args.size, val_fraction=config.val_fraction, seed=config.seed)
    val = data.val.permute(0, 2, 3, 1).contiguous().numpy()
    common = {"enforce_gate": False, "threshold_quantile": config.threshold_quantile, "seed": config.seed,
              "threads": args.threads}  # fmt: skip
    reference = gate_reference(fp32, val, seed=config.seed, threshold_quantile=config.threshold_quantile,
                               threads=args.threads)  # fmt: skip
    ort8, gate = quantize_onnx(fp32, val, reference=reference, **common)
    ov8, ov_gate = quantize_openvino(fp32, val, reference=reference, **common)
    out["gates"] = {"onnxruntime-int8": gate.to_dict(), "openvino-int8": ov_gate.to_dict()}
    for variant in ("openvino", "openvino-bf16"):  # the fp32 file in OpenVINO, under the same gate
        if variant == "openvino" or cpu_has_bf16():
            _, float_gate = measure_variant(fp32, variant, val, None, config.threshold_quantile, reference,
                                            threads=args.threads)  # fmt: skip
            out["gates"][variant] = float_gate.to_dict()
    files = {"onnxruntime": fp32, "openvino": fp32, "openvino-bf16": fp32, "onnxruntime-int8": ort8,
             "openvino-int8": ov8}  # fmt: skip
    out["onnx_test"], out["variants_ms"] = score_and_time(files, data, args.size, args.threads, args.repeats)
    model, _, meta = load_model_from_checkpoint(result.checkpoint_path)
    graph = ExportGraph(model, args.size, meta["thresholds"]).eval()
    torch.set_num_threads(args.threads)
    for batch in (1, 8):
        tensor = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, args.size, args.size, 3),
                                                                     dtype=np.uint8))  # fmt: skip

        def eager(t: torch.Tensor = tensor) -> None:
            with torch.inference_mode():
                graph(t)

        out[f"eager_b{batch}_ms"] = _median_ms_per_image(eager, batch, args.repeats)
    return out


# --------------------------------------------------------------------------- report


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) and b > 0 else "-"


def _f(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "-"


def _gate(adkd: dict[str, Any], variant: str) -> str:
    """A gated variant's verdict (int8, and OpenVINO running the fp32 file): "passed", or "refused" (adkd would not
    ship it); "" for ONNX Runtime fp32, the reference."""
    gate = (adkd.get("gates") or {}).get(variant)
    return "" if gate is None else ("passed" if gate["ok"] else "refused")


ADKD_VARIANTS = ("onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")
ANOMALIB_INFERENCE = (("ort", "ONNX Runtime fp32"), ("ov_f32", "OpenVINO FP32 IR, f32 hint"),
                      ("ov_bf16", "OpenVINO FP32 IR, default hint"), ("ov_int8", "OpenVINO NNCF INT8_PTQ"))  # fmt: skip
# Same precision, side by side: adkd's variant against anomalib's.
SAME_PRECISION = (
    ("fp32", "openvino", "ov_f32"),
    ("bf16", "openvino-bf16", "ov_bf16"),
    ("int8", "openvino-int8", "ov_int8"),
)


def table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"adkd vs anomalib {ANOMALIB_VERSION}, {meta['machine']}, {meta['threads']} torch threads, "
        f"{meta['size']} px, batch {meta['batch']}, {meta['epochs']} epochs, load {meta['load']} "
        f"(`{meta['command']}`):",
        "",
        "| run | adkd default | adkd fp32, no cache | anomalib default (fp32) | anomalib bf16-mixed | "
        "adkd / anomalib fp32 | adkd / anomalib bf16 | adkd fp32 / anomalib fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, res in results.items():
        a, p, b, h = (res.get(k, {}).get("train_images_per_s") for k in ("adkd", "adkd_plain", "anomalib",
                                                                          "anomalib_bf16"))  # fmt: skip
        lines.append(f"| {run} train img/s | {_f(a)} | {_f(p)} | {_f(b)} | {_f(h)} | {_ratio(a, b)} | "
                     f"{_ratio(a, h)} | {_ratio(p, b)} |")  # fmt: skip
    lines += ["", "Inference, ms/image at batch 1 / 8 (lower is faster):", ""]
    lines += [
        "| run | runtime | adkd b1 | adkd b8 | adkd int8 gate | anomalib b1 | anomalib b8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, res in results.items():
        a, b = res.get("adkd", {}), res.get("anomalib", {})
        lines.append(f"| {run} | PyTorch eager | {_f(a.get('eager_b1_ms'))} | {_f(a.get('eager_b8_ms'))} | | "
                     f"{_f(b.get('eager_b1_ms'))} | {_f(b.get('eager_b8_ms'))} |")  # fmt: skip
        for variant in ADKD_VARIANTS:
            t = (a.get("variants_ms") or {}).get(variant, {})
            lines.append(
                f"| {run} | adkd {variant} | {_f(t.get('b1_ms'))} | {_f(t.get('b8_ms'))} | {_gate(a, variant)} | | |"
            )
        for key, label in ANOMALIB_INFERENCE:
            lines.append(
                f"| {run} | anomalib {label} | | | | {_f(b.get(f'{key}_b1_ms'))} | {_f(b.get(f'{key}_b8_ms'))} |"
            )
    lines += ["", "Ratios at batch 1 (adkd / anomalib; the target is <= 0.7 at the same precision):", ""]
    for run, res in results.items():
        a, b = res.get("adkd", {}), res.get("anomalib", {})
        timings = a.get("variants_ms") or {}
        parts = []
        for precision, ours, theirs in SAME_PRECISION:
            refused = " (gate refused)" if _gate(a, ours) == "refused" else ""
            parts.append(f"{precision} {_ratio(timings.get(ours, {}).get('b1_ms'), b.get(f'{theirs}_b1_ms'))}{refused}")
        shipped = {v: t["b1_ms"] for v, t in timings.items() if _gate(a, v) != "refused"}
        best_a = min(shipped.values(), default=None)
        best_b = min((b[k] for k in b if k.endswith("_b1_ms") and k != "eager_b1_ms"), default=None)
        fp32 = timings.get("onnxruntime", {}).get("b1_ms")
        best8 = min((shipped[v] for v in ("onnxruntime-int8", "openvino-int8") if v in shipped), default=None)
        lines.append(f"- {run}: {', '.join(parts)}; fastest adkd variant its gates pass / fastest anomalib "
                     f"{_ratio(best_a, best_b)}; adkd's fastest passed int8 / adkd ONNX Runtime fp32 "
                     f"{_ratio(best8, fp32)}")  # fmt: skip
        for variant, metrics in (a.get("onnx_test") or {}).items():
            shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k in ("image_auroc", "pixel_auroc"))
            lines.append(f"  - test split, adkd {variant}: {shown}")
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
    p.add_argument("--epochs", type=int, default=3, help="epochs of every training (train img/s: epochs 2+)")
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
    from results_md import load_span, write_section

    results: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs.split(","):
            res = results[run] = {"adkd": run_adkd(run, args, Path(tmp))}
            print(run, "adkd", json.dumps(res["adkd"], default=str)[:2000], flush=True)
            res["adkd_plain"] = train_adkd(run, args, Path(tmp), speed=False)[0]
            print(run, "adkd plain", json.dumps(res["adkd_plain"], default=str)[:500], flush=True)
            if not args.adkd_only:
                res["anomalib"] = run_anomalib(run, args)
                print(run, "anomalib", json.dumps(res["anomalib"])[:2000], flush=True)
                res["anomalib_bf16"] = run_anomalib(run, args, precision="bf16-mixed", inference=False)
                print(run, "anomalib bf16", json.dumps(res["anomalib_bf16"])[:500], flush=True)
    meta = {
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "size": args.size,
        "batch": args.batch,
        "epochs": args.epochs,
        "load": load_span(load_before) + " (1/5/15-min averages)",
        "command": "benchmarks/vs_anomalib.py " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"vs_anomalib-{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    text = table(results, meta)
    if not args.adkd_only and args.out == REPO / "benchmarks" / "results":
        write_section(f"vs_anomalib-{args.tag}", text)
    print(text)


if __name__ == "__main__":
    main()
