"""ONNX export of a trained model, preprocessing included, verified against PyTorch."""

from adkd.pipelines.export.onnx_export import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAMES,
    ExportGraph,
    ParityReport,
    export_checkpoint,
    export_onnx,
    read_metadata,
    verify_onnx,
)

__all__ = [
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAMES",
    "ExportGraph",
    "ParityReport",
    "export_checkpoint",
    "export_onnx",
    "read_metadata",
    "verify_onnx",
]
