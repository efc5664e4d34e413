"""Keep a command's output adkd's own: third-party notices are silenced unless ``--debug`` asks for them.

Set before MLflow or Ray is imported, and inherited by the processes they start (Ray workers, `mlflow`
servers), which is why these are environment variables and not only logger levels.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

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
    # The per-file bar of a model download (adkd station, adkd predict on models:/...) is noise on a terminal.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


# What Ray Tune prints at the start of every search: its results folder (adkd's report says where results are)
# and a TensorBoard command. Printed whatever the run's verbosity.
RAY_TUNE_NOISE = ("View detailed results here:", "To visualize your results with TensorBoard")


class _DroppingStream:
    """A text stream that forwards every write except those holding one of ``markers`` (and the newline a
    dropped ``print`` ends with)."""

    def __init__(self, stream: Any, markers: tuple[str, ...]) -> None:
        self._stream, self._markers, self._dropped = stream, markers, False

    def write(self, text: str) -> int:
        if any(marker in text for marker in self._markers):
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":
            self._dropped = False
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def dropping_prints(markers: tuple[str, ...] = RAY_TUNE_NOISE) -> Iterator[None]:
    """Within the block, prints to stdout that hold one of ``markers`` are dropped (all pass with ``--debug``)."""
    if debug_requested():
        yield
        return
    with redirect_stdout(_DroppingStream(sys.stdout, markers)):
        yield
