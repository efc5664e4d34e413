"""Which ONNX Runtime static-quantization variant of an adkd graph is fastest at batch 1 on this CPU.

    .venv/bin/python benchmarks/int8_variants.py [SIZE=256] [MODEL=stfpm]

The model's whole exported graph (MobileNetV2 ImageNet teacher from ../shared), 2 intra-op threads,
median of 20 runs on one image, calibrated on 16 random images (speed only: no accuracy is measured here;
adkd's gate in pipelines/export/quantize.py decides accuracy). Prints ms and the ratio to fp32.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from adkd.models.zoo import build_model
from adkd.pipelines.export.onnx_export import export_onnx
from adkd.pipelines.export.quantize import INPUT_NAME, network_nodes

SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 256
MODEL = sys.argv[2] if len(sys.argv) > 2 else "stfpm"
THRESHOLDS = {"image": 1.0, "pixel": 1.0, "score_min": 0.0, "score_max": 2.0}


class Reader:
    def __init__(self, images):
        self.it = iter([{INPUT_NAME: images[i : i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.it, None)


def timed(path, x, repeats=20):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(3):
        s.run(None, feed)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append(time.perf_counter() - t0)
    return 1000 * statistics.median(t)


model = build_model(
    MODEL, backbone="mobilenet_v2", weights="../shared/weights/mobilenet_v2_imagenet_features.pth"
).eval()
rng = np.random.default_rng(0)
calib = rng.integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8)
x = calib[:1]
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    fp32 = export_onnx(model, tmp / "m.onnx", SIZE, THRESHOLDS, {"model": MODEL})
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    nodes = network_nodes(onnx.load(str(pre)))
    base = timed(fp32, x)
    print(f"fp32 {base:.1f} ms", flush=True)
    variants = {
        "qdq_s8s8": {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
        },
        "qdq_u8s8": {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
        },
        "qop_u8s8": {
            "quant_format": QuantFormat.QOperator,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
        },
        "qop_u8u8": {
            "quant_format": QuantFormat.QOperator,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QUInt8,
        },
        "qdq_u8s8_convonly": {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": ["Conv"],
        },
        "qop_u8s8_convonly": {
            "quant_format": QuantFormat.QOperator,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": ["Conv"],
        },
    }
    for name, kw in variants.items():
        out = tmp / f"{name}.onnx"
        try:
            quantize_static(
                str(pre),
                str(out),
                Reader(calib),
                per_channel=True,
                nodes_to_quantize=nodes,
                calibrate_method=CalibrationMethod.MinMax,
                **kw,
            )
            ms = timed(out, x)
            print(f"{name:20s} {ms:7.1f} ms  ratio {ms / base:.2f}", flush=True)
        except Exception as exc:
            print(f"{name:20s} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
