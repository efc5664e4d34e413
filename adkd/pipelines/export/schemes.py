"""The int8 layouts by name, defined once (the ``int8_scheme`` setting reads them from here); no heavy imports."""

from __future__ import annotations

from typing import Literal

from adkd.errors import ConfigError

# ONNX Runtime's static-quantization layouts, by name: format (QDQ pairs around float ops, or QOperator
# QLinear* ops) and activation/weight types. Speed differs by CPU (benchmarks/int8_variants.py).
INT8_SCHEMES: dict[str, tuple[str, str, str]] = {
    "qdq-s8s8": ("QDQ", "QInt8", "QInt8"),  # ONNX Runtime's first suggestion; the slowest here
    # The default: 0.76-0.80x fp32 at batch 1 on the real bottle against 1.21-1.31x for qdq-s8s8, same AUROC.
    # On CPUs without VNNI, u8 x s8 products saturate with 8-bit weights: there the weights take 7 bits
    # (quantize.quantize_graph's reduce_range), which the gate passes (an AMD EPYC with avx2 alone).
    "qdq-u8s8": ("QDQ", "QUInt8", "QInt8"),
    "qop-u8s8": ("QOperator", "QUInt8", "QInt8"),
}
# No u8 weights: ONNX Runtime's QLinearConv quantizer writes per-channel weights as int8 whatever is asked.
Int8Scheme = Literal["qdq-s8s8", "qdq-u8s8", "qop-u8s8"]  # the keys of INT8_SCHEMES, for the setting's type
DEFAULT_INT8_SCHEME: Int8Scheme = "qdq-u8s8"
INT8_SUFFIX = ".int8.onnx"  # model.onnx → model.int8.onnx; here, not in quantize.py, so readers need no torch


def check_scheme(scheme: str) -> str:
    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"int8 scheme '{scheme}' is not one of {', '.join(INT8_SCHEMES)}")
    return scheme
