"""Suite-wide isolation: no test leaves MLflow URIs behind for the next one in the same worker.

`mlflow.set_tracking_uri` / `set_registry_uri` also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into
os.environ, so an in-process test would otherwise point later subprocesses (adkd, mlflow serve) at a
server that has already stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_PREFIXES = ("MLFLOW_", "ADKD_", "RAY_ADDRESS", "AWS_")


@pytest.fixture(autouse=True)
def _isolated_service_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_PREFIXES)}
    yield
    for key in [k for k in os.environ if k.startswith(_PREFIXES)]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)
    try:
        import mlflow.tracking
    except ImportError:
        return
    # The process-wide URIs set by mlflow.set_tracking_uri / set_registry_uri.
    mlflow.tracking._tracking_service.utils._tracking_uri = None
    mlflow.tracking._model_registry.utils._registry_uri = None
