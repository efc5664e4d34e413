"""Scoring images: the one place that turns images into anomaly maps and image scores.

``runtime`` (device, bf16 autocast, tensor placement), ``torch_scoring`` (a PyTorch model in the run's own
precision), ``artifact`` (an exported model through its predictor: what ships, what evaluation measures) and
``validity`` (which pixels of a model input are real image: letterbox padding is not). Training, evaluation,
export and prediction all score through here; this package imports none of them.
"""
