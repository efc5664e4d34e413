"""ONNX export of a trained model (preprocessing included, verified against PyTorch) and its gated int8 model.

This package takes models, images and files: it never reads a checkpoint or a run's settings (that is
``adkd.pipelines.train.artifacts``), so training can use it without an import circle. Names are imported
lazily so that reading the int8 scheme names does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "INPUT_NAME": "graph_metadata",
    "OPSET": "graph_metadata",
    "OUTPUT_NAMES": "graph_metadata",
    "ExportError": "onnx_export",
    "ExportGraph": "onnx_export",
    "ParityReport": "onnx_export",
    "export_onnx": "onnx_export",
    "read_metadata": "graph_metadata",
    "set_metadata": "graph_metadata",
    "verify_onnx": "onnx_export",
    "write_thresholds": "onnx_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"adkd.pipelines.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'adkd.pipelines.export' has no attribute {name!r}")
