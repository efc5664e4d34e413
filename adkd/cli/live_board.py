"""The live table of a multi-category run: one row per category (state, epoch, loss, time left).

``LiveBoard`` is a ``RunListener``: the CLI hands it to ``run_all_categories`` and the table is drawn
by rich's ``Live`` in its own refresh thread while the driver feeds it events.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.cluster.listeners import RunListener


@contextmanager
def log_lines_above_live(terminal_streams: tuple[Any, ...]) -> Iterator[None]:
    """Inside a rich ``Live``: send logging's console handlers through Live's stdout/stderr proxies.

    A ``StreamHandler`` keeps the stream it was created with, so without this MLflow's INFO lines
    (and any library's) are written straight to the terminal, through the middle of the live table.
    ``terminal_streams`` are the real (stdout, stderr) from before ``Live`` started.
    """
    proxies = {id(t): now for t, now in zip(terminal_streams, (sys.stdout, sys.stderr), strict=True) if t is not now}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    swapped: list[tuple[logging.StreamHandler, Any]] = []
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and id(handler.stream) in proxies:
                swapped.append((handler, handler.setStream(proxies[id(handler.stream)])))
    try:
        yield
    finally:
        for handler, original in swapped:
            handler.setStream(original)


@dataclass
class CategoryProgress:
    """The live state of one category's training as the driver sees it."""

    category: str
    epochs: int | None = None
    state: str = "PENDING"  # PENDING, RUNNING, RESTARTED, FINISHED, FAILED
    epoch: int = 0
    loss: float | None = None
    attempts: int = 0
    started_at: float | None = None
    epoch_times: list[float] = field(default_factory=list)
    last_epoch_at: float | None = None

    def eta_s(self) -> float | None:
        if not self.epochs or not self.epoch_times or self.state not in ("RUNNING", "RESTARTED"):
            return None
        per_epoch = sum(self.epoch_times) / len(self.epoch_times)
        return max(self.epochs - self.epoch, 0) * per_epoch


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    minutes, sec = divmod(seconds, 60)
    return f"{minutes}:{sec:02d}"


class ProgressBoard:
    """Keeps every category's live state; the driver feeds it events, rich renders it."""

    def __init__(self, categories: list[str], epochs: int | None = None, title: str = "adkd train") -> None:
        self.started = time.monotonic()
        self.title = title
        self.rows = {c: CategoryProgress(category=c, epochs=epochs) for c in categories}

    def on_start(self, category: str, attempt: int, epochs: int | None = None) -> None:
        row = self.rows[category]
        row.attempts = max(row.attempts, attempt)
        row.state = "RESTARTED" if attempt > 1 else "RUNNING"
        if epochs:
            row.epochs = epochs
        now = time.monotonic()
        row.started_at = row.started_at or now
        row.last_epoch_at = now

    def on_epoch(self, category: str, epoch: int, metrics: dict[str, float]) -> None:
        row = self.rows[category]
        now = time.monotonic()
        if row.last_epoch_at is not None:
            row.epoch_times.append(now - row.last_epoch_at)
        row.last_epoch_at = now
        row.epoch = epoch
        loss = metrics.get("train/loss", metrics.get("loss"))
        if loss is not None:
            row.loss = float(loss)

    def on_end(self, category: str, status: str) -> None:
        self.rows[category].state = status

    def render(self) -> Table:
        elapsed = _fmt_duration(time.monotonic() - self.started)
        table = Table(title=f"{self.title} ({elapsed} elapsed)")
        for col in ("category", "state", "epoch", "loss", "time left"):
            table.add_column(col, justify="left" if col in ("category", "state") else "right")
        styles = {"FINISHED": "green", "FAILED": "red", "RESTARTED": "yellow", "RUNNING": "cyan"}
        for row in self.rows.values():
            epoch = f"{row.epoch}/{row.epochs}" if row.epochs else str(row.epoch)
            loss = f"{row.loss:.4f}" if row.loss is not None else "-"
            state = row.state if row.attempts <= 1 else f"{row.state} (try {row.attempts})"
            style = styles.get(row.state, "")
            table.add_row(
                Text(row.category), Text(state, style=style), epoch, loss, _fmt_duration(row.eta_s())
            )  # Text: a category named "[a]" is a name, not markup
        return table


class _RowEnd(NullCallback):
    """Marks a category's row FINISHED or FAILED when its result arrives."""

    def __init__(self, board: ProgressBoard, key: str) -> None:
        self.board = board
        self.key = key

    def on_end(self, result: TrainResult) -> None:
        self.board.on_end(self.key, result.status)


class LiveBoard(RunListener):
    """A ``RunListener`` that draws the live table; use it in a ``with`` so the table stops on any error."""

    def __init__(self, console: Console, title: str = "adkd train --all-categories") -> None:
        self.console = console
        self.title = title
        self.board = ProgressBoard([], title=title)
        self._epochs: dict[str, int] = {}
        self._stack: ExitStack | None = None

    def __enter__(self) -> LiveBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, configs: dict[str, TrainConfig]) -> None:
        self.board = ProgressBoard(list(configs), title=self.title)
        # The engine counts both phases (autoencoder pretraining, then distillation) as epochs.
        self._epochs = {key: cfg.total_epochs for key, cfg in configs.items()}
        terminal = (sys.stdout, sys.stderr)
        stack = ExitStack()
        stack.enter_context(
            Live(get_renderable=self.board.render, console=self.console, refresh_per_second=4, transient=False)
        )
        stack.enter_context(log_lines_above_live(terminal))
        self._stack = stack

    def callback(self, key: str) -> TrainCallback:
        return _RowEnd(self.board, key)

    def event(self, event: dict[str, Any]) -> None:
        key = event["category"]
        if event["kind"] == "start":
            self.board.on_start(key, event["attempt"], self._epochs.get(key))
        elif event["kind"] == "epoch":
            self.board.on_epoch(key, event["epoch"], event["metrics"])

    def end(self, results: list[TrainResult]) -> dict[str, str]:
        self.close()
        return {}

    def close(self) -> None:
        """Stop the live table (its last frame stays on the terminal)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
