"""The MLflow model registry: registered names, versions, gated promotion with an audit trail, the pyfunc that
ships, and resolving a model reference to its ONNX file.
"""
