"""Monitoring of production verdicts against the model's own validation normals.

``statistics`` (KS, PSI, flag rate, confirmed error rates, latency; pure numbers), ``report`` (plots and the
self-contained HTML), ``monitor`` (read the verdict log, check the bounds, log an MLflow monitoring run).
"""
