"""Where ONNX Runtime spends its time in adkd's and anomalib's exported graphs: kernel time by operator type.

    .venv/bin/python benchmarks/ort_profile.py [--batch 8] [--threads 2] [--nodes N]

Exports adkd's rd (ResNet18, random weights) and stfpm (ImageNet MobileNetV2 from ../shared) graphs and, when
benchmarks/.venv-anomalib exists (`vs_anomalib.py --setup-anomalib`), anomalib's models of the same runs through
its own `Engine.export` (random timm weights). Each graph runs in adkd's ONNX Runtime with its profiler on,
12 runs (2 of them warm-ups, all profiled) on random 256 px images; prints kernel ms/image, the largest
operator types' shares, and the split between the networks and the anomaly map after them (by node name:
``MAP_PARTS``); ``--nodes N`` lists the N costliest nodes. Profiling adds overhead: read the shares, and take
the speed from vs_anomalib.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
RUNS = {"rd": ("resnet18",), "stfpm": ("mobilenet_v2",)}

_ANOMALIB_EXPORT = textwrap.dedent(
    """
    import sys, timm
    _create_model = timm.create_model
    def _random_weights(*a, **k):
        k["pretrained"] = False
        return _create_model(*a, **k)
    timm.create_model = _random_weights
    from anomalib.engine import Engine
    from anomalib.models import ReverseDistillation, Stfpm
    out = sys.argv[1]
    models = {
        "rd": ReverseDistillation(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2", "layer3"]),
        "stfpm": Stfpm(backbone="mobilenetv2_100", layers=["blocks.1", "blocks.2", "blocks.4"]),
    }
    for name, model in models.items():
        path = Engine(accelerator="cpu", devices=1, logger=False).export(
            model=model, export_type="onnx", export_root=f"{out}/{name}", input_size=(256, 256))
        print("EXPORTED", name, path)
    """
)


def adkd_graphs(out: Path) -> dict[str, Path]:
    from bottle_runs import MOBILENET_WEIGHTS

    from adkd.models.zoo import build_model
    from adkd.pipelines.export.onnx_export import export_onnx

    thresholds = {"image": 1.0, "pixel": 1.0, "score_min": 0.0, "score_max": 2.0}
    paths = {}
    for name, (backbone,) in RUNS.items():
        weights = str(MOBILENET_WEIGHTS) if backbone == "mobilenet_v2" else "none"
        model = build_model(name, backbone=backbone, weights=weights).eval()
        paths[f"adkd {name}"] = export_onnx(model, out / f"adkd_{name}.onnx", 256, thresholds, {"model": name})
    return paths


def anomalib_graphs(out: Path) -> dict[str, Path]:
    py = REPO / "benchmarks" / ".venv-anomalib" / "bin" / "python"
    if not py.exists():
        print("no benchmarks/.venv-anomalib: adkd's graphs only", flush=True)
        return {}
    proc = subprocess.run([str(py), "-c", _ANOMALIB_EXPORT, str(out)], capture_output=True, text=True, check=True)
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("EXPORTED ")]
    return {f"anomalib {name}": Path(path) for _, name, path in lines}


def profile(path: Path, batch: int, threads: int, tmp: Path, repeats: int = 10) -> dict[tuple[str, str], float]:
    """ms/image of kernel time by (operator type, node name)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / path.stem)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    rng = np.random.default_rng(0)
    if inp.type == "tensor(float)":  # anomalib: float [B,3,H,W] in [0,1], normalised inside
        x = rng.random((batch, 3, 256, 256)).astype(np.float32)
    else:
        x = rng.integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8)
    for _ in range(2 + repeats):  # the 2 warm-ups are in the profile too: shares barely move
        session.run(None, {inp.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_node: dict[tuple[str, str], float] = collections.defaultdict(float)
    for e in [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]:
        by_node[e["args"]["op_name"], e["name"].removesuffix("_kernel_time")] += e["dur"]
    scale = 1e-3 / ((2 + repeats) * batch)  # µs over all runs -> ms per image
    return {key: us * scale for key, us in by_node.items()}


# Node names (the exporters' module paths) of the anomaly map after the networks: distances, resizing, the blur.
MAP_PARTS = ("anomaly_map", "blur", "gaussian", "map_generator")


def is_map(node: str) -> bool:
    return any(part in node.lower() for part in MAP_PARTS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nodes", type=int, default=0, help="Also list each graph's N costliest nodes.")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        graphs = {**adkd_graphs(tmp_dir), **anomalib_graphs(tmp_dir)}
        for name in sorted(graphs, key=lambda n: n.split()[::-1]):
            nodes = profile(graphs[name], args.batch, args.threads, tmp_dir)
            ops: dict[str, float] = collections.defaultdict(float)
            for (op, _), ms in nodes.items():
                ops[op] += ms
            total = sum(ops.values())
            top = sorted(ops.items(), key=lambda kv: -kv[1])[:4]
            shown = ", ".join(f"{op} {100 * ms / total:.1f} %" for op, ms in top)
            print(f"{name:15s} kernels {total:6.2f} ms/image (batch {args.batch}): {shown}", flush=True)
            map_nodes = [ms for (_, node), ms in nodes.items() if is_map(node)]
            if map_nodes:  # anomalib's graphs (exported through dynamo) name nodes by op: no split to read there
                anomaly_map = sum(map_nodes)
                split = f"networks {total - anomaly_map:6.2f} ms/image, anomaly map {anomaly_map:.2f}"
                print(f"{'':15s} {split}", flush=True)
            else:
                print(f"{'':15s} node names carry no module paths: no split between networks and map", flush=True)
            for (op, node), ms in sorted(nodes.items(), key=lambda kv: -kv[1])[: args.nodes]:
                print(f"{'':15s}   {ms:6.2f} ms  {op:14s} {node}", flush=True)


if __name__ == "__main__":
    main()
