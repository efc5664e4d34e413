"""Log lines printed while the live table runs go above it, through rich, not through the table."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console
from rich.live import Live
from rich.text import Text

from adkd.cli.live_board import log_lines_above_live


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("adkd-test-live")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    before = list(logger.handlers)
    yield logger
    for handler in list(logger.handlers):
        if handler not in before:
            logger.removeHandler(handler)


def _terminal(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> tuple[io.StringIO, io.StringIO, logging.StreamHandler]:
    # Patched in the test body: pytest re-installs its own capture between fixture setup and the call.
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    handler = logging.StreamHandler(err)  # like MLflow's handler: bound to stderr when created
    logger.addHandler(handler)
    return out, err, handler


def test_lines_go_through_the_live_console_and_handlers_are_restored(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    out, err, handler = _terminal(monkeypatch, logger)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=60)
    with Live(Text("THE TABLE"), console=console) as live, log_lines_above_live((out, err)):
        logger.info("Registered model 'adkd-disc' version 1")
        live.refresh()
    assert "Registered model 'adkd-disc' version 1" in screen.getvalue()
    assert err.getvalue() == ""
    assert handler.stream is err  # back to the real stream afterwards
    logger.info("after")
    assert err.getvalue() == "after\n"


def test_without_a_terminal_nothing_is_swapped(monkeypatch: pytest.MonkeyPatch, logger: logging.Logger) -> None:
    out, err, handler = _terminal(monkeypatch, logger)
    console = Console(file=io.StringIO(), force_terminal=False)
    with Live(Text("THE TABLE"), console=console), log_lines_above_live((out, err)):
        logger.info("plain")
    assert err.getvalue() == "plain\n"
    assert handler.stream is err
