"""Keep a command's output adkd's own: third-party notices are silenced unless ``--debug`` asks for them.

Set before MLflow or Ray is imported, and inherited by the processes they start (Ray workers, `mlflow`
servers), which is why these are environment variables and not only logger levels.
"""

from __future__ import annotations

import logging
import os

# Notices that say nothing about the user's run. Errors always show.
# Raylet notices printed on the driver; fractional CPUs per category start more workers than cores on purpose.
RAY_NOISE = ("PYTHON worker processes have been started on node",)
_state = {"debug": False}


def debug_requested() -> bool:
    """True when the command was started with ``--debug`` (third-party output shown)."""
    return _state["debug"]


def quiet_third_parties(debug: bool) -> None:
    """Silence MLflow's INFO lines, its type-hint notice and Ray's start-up notices (no-op with ``debug``)."""
    _state["debug"] = debug
    if debug:
        return
    # Child processes (Ray workers, mlflow servers) read these at import.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def drop_ray_driver_noise() -> None:
    """Filter the raylet notices Ray prints on the driver (see ``RAY_NOISE``); other raylet errors still show."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = ray_worker.print_to_stdstream
    if getattr(original, "_adkd_filtered", False):
        return

    def filtered(data: dict, ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if not any(noise in line for noise in RAY_NOISE)]
        if lines:
            original({**data, "lines": lines}, ignore_prefix)

    filtered._adkd_filtered = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = filtered
