"""Inference with exported ONNX models: load, predict, write overlays and summaries."""

from adkd.pipelines.predict.inputs import collect_inputs
from adkd.pipelines.predict.onnx_predictor import OnnxPredictor, Prediction
from adkd.pipelines.predict.runtimes import open_predictor

__all__ = ["OnnxPredictor", "Prediction", "collect_inputs", "open_predictor"]
