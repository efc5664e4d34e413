"""Processes adkd manages: a single-box MLflow server and the process trees it starts."""
