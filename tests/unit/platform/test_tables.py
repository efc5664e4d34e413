"""Fitted tables: names and versions are printed whole at any width; less important columns give way."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from adkd.platform.cluster.results import ResultRow, results_cells
from adkd.platform.console.tables import Column, fit_table, print_table

COLUMNS = [
    Column("model", keep=True),
    Column("version", "right", keep=True),
    Column("aliases", wrap=True, rank=9),
    Column("family", rank=6),
    Column("backbone", rank=2),
    Column("image AUROC", "right", rank=8),
    Column("run id", rank=1),
]
ROWS = [
    ["adkd-transistor-with-a-long-name", "12", "production, staging", "stfpm-ae", "wide_resnet50_2", "99.12", "f" * 32],
    ["adkd-disc", "1", "", "rd", "mobilenet_v2", "35.90", "0" * 32],
]


def _render(width: int, columns: list[Column] = COLUMNS, rows: list[list[str]] = ROWS) -> tuple[str, list[str]]:
    console = Console(file=io.StringIO(), width=width)
    hidden = print_table(console, "adkd registry", columns, rows, more="--json shows every field")
    return console.file.getvalue(), hidden


@pytest.mark.parametrize("width", [80, 60, 45])
def test_names_and_versions_are_whole_and_every_line_fits(width: int) -> None:
    out, hidden = _render(width)
    assert "adkd-transistor-with-a-long-name" in out and "adkd-disc" in out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    assert "run id" in hidden  # the least important column goes first
    assert f"not shown at {width} columns: " in out.replace("\n", " ")


def test_columns_are_dropped_least_important_first_and_only_as_needed() -> None:
    _, wide = _render(200)
    assert wide == []
    _, at_80 = _render(80)
    # minimum widths: 138 with all, 103 without run id, 85 without backbone, 74 without family
    assert at_80 == ["family", "backbone", "run id"]
    _, at_60 = _render(60)
    assert at_60 == ["family", "backbone", "image AUROC", "run id"]  # 60 wide: aliases (rank 9) stays


def test_wrapping_columns_wrap_at_spaces_instead_of_being_cut() -> None:
    out, _ = _render(60)
    lines = out.splitlines()
    # 'production, staging' no longer fits one line at 60 columns: it wraps between the words
    assert any("production," in line for line in lines) and any("staging" in line for line in lines)
    assert "aliases" in out


def test_unlimited_width_keeps_every_column() -> None:
    table, hidden = fit_table("t", COLUMNS, ROWS)
    assert hidden == [] and len(table.columns) == len(COLUMNS)


def test_results_table_keeps_category_status_and_version_at_80_columns() -> None:
    metrics = {"test/image_auroc": 0.991, "test/pixel_auroc": 0.985, "test/aupro": 0.959}
    rows = [ResultRow("a-very-long-category-name", "stfpm-ae", "FINISHED", metrics, 3.5, "17")]
    columns, cells = results_cells(rows)
    out, hidden = _render(80, columns, cells)
    assert "a-very-long-category-name" in out and "FINISHED" in out and "17" in out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert hidden == ["model", "AUPRO", "minutes"]  # both AUROCs fit once these are gone


def test_cells_are_text_unless_their_column_takes_markup() -> None:
    # A Ray job's entrypoint, a refusal's reason: "[openvino]" was read as a style tag and vanished.
    columns = [Column("id", keep=True), Column("entrypoint", wrap=True)]
    out, _ = _render(200, columns, [["raysubmit_1", "adkd train --set int8_runtimes=[openvino]"]])
    assert "adkd train --set int8_runtimes=[openvino]" in out
    rows = [ResultRow(category="[a]", model="rd", status="FINISHED", metrics={}, minutes=1.0)]
    out, _ = _render(200, *results_cells(rows))
    assert "[a]" in out and "FINISHED" in out and "[green]" not in out  # the status column's own markup renders
