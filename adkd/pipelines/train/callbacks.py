"""How a training run reports progress and artifacts without knowing who listens.

``platform`` implements these for MLflow and Ray; the CLI implements them for rich
progress bars. A pipeline calls every method of every callback it was given, in order.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from adkd.errors import AdkdError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one category's training produced."""

    category: str
    model: str
    status: str  # "FINISHED" or "FAILED"
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. "test/image_auroc"
    thresholds: dict[str, float] = field(default_factory=dict)
    checkpoint_path: Path | None = None
    epochs_run: int = 0
    duration_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    data_validation: str = "not_run"  # "passed", "skipped" or "not_run"
    notes: list[str] = field(default_factory=list)  # what the run decided on its own (resume, thresholds)
    onnx_path: Path | None = None  # model.onnx, exported at the end of a finished run
    int8_path: Path | None = None  # the gated int8 model when export_int8 is on and the gate passed
    tags: dict[str, str] = field(default_factory=dict)  # e.g. the int8 gate's verdict, for the tracker
    data_fingerprint: str = ""  # of the category's files, computed where the data was read

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("run_dir", "checkpoint_path", "onnx_path", "int8_path"):
            out[key] = str(out[key]) if out[key] else None
        return out


@runtime_checkable
class TrainCallback(Protocol):
    """Receives a run's events. Every method is optional to act on, none may raise for control."""

    def on_start(self, config: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_model(self, epoch: int, model: Any, runtime: Any, data: Any, config: Any) -> dict[str, float]:
        """Extra metrics of the epoch's model (e.g. tuning's validation score), merged into ``on_epoch_end``'s."""
        ...

    def on_checkpoint(self, path: Path, epoch: int) -> None: ...

    def on_artifact(self, path: Path, kind: str) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


class NullCallback:
    """A callback that ignores everything; subclass it and override what you need."""

    def on_start(self, config: dict[str, Any]) -> None:
        return None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        return None

    def on_epoch_model(self, epoch: int, model: Any, runtime: Any, data: Any, config: Any) -> dict[str, float]:
        return {}

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        return None

    def on_artifact(self, path: Path, kind: str) -> None:
        return None

    def on_end(self, result: TrainResult) -> None:
        return None


def emit(callbacks: Sequence[TrainCallback], event: str, *args: Any) -> None:
    """Call ``event`` on every callback, in order."""
    for cb in callbacks:
        getattr(cb, event)(*args)


def reported_run(
    config: Any,
    run_dir: Path,
    callbacks: Sequence[TrainCallback],
    body: Callable[[TrainResult], None],
    *,
    main: bool = True,
    rank: int = 0,
) -> TrainResult:
    """One run as the callbacks see it: a RUNNING result to ``on_start``, ``body(result)``, the result to ``on_end``.

    A user error (AdkdError) ends the result FAILED and is raised again; any other failure ends it FAILED with the
    error, its traceback in ``run_dir/error.txt`` (written by the ``main`` rank alone) and in the log.
    """
    started = time.perf_counter()
    result = TrainResult(
        category=config.category,
        model=config.model,
        status="RUNNING",
        run_dir=run_dir,
        config=config.model_dump(mode="json"),
    )
    emit(callbacks, "on_start", result.config)
    try:
        body(result)
        result.status = "FINISHED"
    except AdkdError as exc:
        result.status, result.error = "FAILED", str(exc)
        result.duration_s = time.perf_counter() - started
        emit(callbacks, "on_end", result)
        raise
    except Exception as exc:
        result.status, result.error = "FAILED", f"{type(exc).__name__}: {exc}"
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(traceback.format_exc())
        log.exception("training %s/%s failed (rank %d)", config.model, config.category, rank)
    result.duration_s = time.perf_counter() - started
    emit(callbacks, "on_end", result)
    return result
