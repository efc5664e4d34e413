"""The live table as a run listener: the driver's events move its rows, the end stops the live view."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from adkd.cli.live_board import LiveBoard
from adkd.pipelines.train.callbacks import TrainResult
from adkd.pipelines.train.presets import resolve_config


def _event(kind: str, category: str, attempt: int = 1, **payload: object) -> dict[str, object]:
    return {"kind": kind, "category": category, "attempt": attempt, "pid": 1, "rank": 0, **payload}


def test_events_restarts_and_results_reach_the_rows(tmp_path: Path) -> None:
    configs = {
        c: resolve_config("rd", "cpu-smoke", category=c, data=str(tmp_path), overrides=["epochs=3"]) for c in "ab"
    }
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with LiveBoard(console, title="test board") as live:
        live.start(configs)
        callbacks = {key: live.callback(key) for key in configs}
        live.event(_event("start", "a"))
        live.event(_event("epoch", "a", epoch=1, metrics={"train/loss": 0.25}))
        live.event(_event("start", "a", attempt=2))
        rows = live.board.rows
        assert rows["a"].state == "RESTARTED" and rows["a"].attempts == 2 and rows["a"].epoch == 1
        assert rows["a"].epochs == configs["a"].total_epochs == 3 and rows["a"].loss == 0.25
        assert rows["b"].state == "PENDING"
        callbacks["a"].on_end(TrainResult(category="a", model="rd", status="FINISHED", run_dir=tmp_path))
        callbacks["b"].on_end(TrainResult(category="b", model="rd", status="FAILED", run_dir=tmp_path))
        assert (rows["a"].state, rows["b"].state) == ("FINISHED", "FAILED")
        assert live.end([]) == {}  # the board registers nothing
        assert live._stack is None
    text = out.getvalue()
    assert "test board" in text and "FINISHED" in text and "FAILED" in text


def test_a_category_name_is_printed_as_it_is(tmp_path: Path) -> None:
    config = resolve_config("rd", "cpu-smoke", category="[x]", data=str(tmp_path), overrides=["epochs=3"])
    out = io.StringIO()
    with LiveBoard(Console(file=out, width=100), title="board") as live:
        live.start({"[x]": config})
        live.event(_event("start", "[x]"))
        rendered = io.StringIO()
        Console(file=rendered, width=100).print(live.board.render())
    assert "│ [x]" in rendered.getvalue() and "RUNNING" in rendered.getvalue()  # was markup: an empty cell
