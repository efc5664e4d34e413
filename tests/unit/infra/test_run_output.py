"""A run's notes, error and folders are printed as text: brackets in them are not rich markup."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from adkd.cli.run_output import print_one
from adkd.pipelines.train.callbacks import TrainResult


def test_brackets_in_notes_errors_and_paths_are_printed() -> None:
    failed = TrainResult("disc", "stfpm", "FAILED", Path("/runs/[a]/disc"))
    failed.notes = ["input uint8 [batch, 64, 64, 3]"]
    failed.error = "maps [3, 1, 64, 64] and masks [3, 1, 32, 32] differ"
    out = io.StringIO()
    assert print_one(Console(file=out, width=200), failed) is False
    # With markup on, rich took each "[word ...]" for a style tag and printed nothing of it.
    assert out.getvalue().splitlines() == [
        "note: input uint8 [batch, 64, 64, 3]",
        "training failed: maps [3, 1, 64, 64] and masks [3, 1, 32, 32] differ (see /runs/[a]/disc/error.txt)",
    ]
