"""The results of a multi-category run: one row per category, as a rich table, markdown and JSON files."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from adkd.pipelines.evaluate.metric_names import METRIC_LABELS, QUALITY_METRICS, logged_key
from adkd.platform.console.tables import Column, fit_table

# Ordered so the final table reads the same way as the MLflow test metrics.
RESULT_METRICS = tuple((logged_key(name), METRIC_LABELS[name]) for name in QUALITY_METRICS)


@dataclass
class ResultRow:
    """One line of the final results table."""

    category: str
    model: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    minutes: float = 0.0
    registered_version: str | None = None
    epochs_run: int = 0
    attempts: int = 1
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt_pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * value:.1f}"


def _metric_columns(rows: list[ResultRow]) -> list[tuple[str, str]]:
    """Image AUROC always; a pixel metric only when some category has it (image-level sets have none)."""
    return [(k, label) for k, label in RESULT_METRICS if k == "test/image_auroc" or any(k in r.metrics for r in rows)]


def _mean_cells(rows: list[ResultRow], columns: list[tuple[str, str]]) -> list[str]:
    """Mean over the finished categories of each shown metric."""
    done = [r for r in rows if r.status == "FINISHED"]
    cells = []
    for key, _ in columns:
        values = [r.metrics[key] for r in done if key in r.metrics and not math.isnan(r.metrics[key])]
        cells.append(_fmt_pct(sum(values) / len(values)) if values else "-")
    return cells


def results_cells(
    rows: list[ResultRow], reference: dict[str, Any] | None = None
) -> tuple[list[Column], list[list[str]]]:
    """Columns and cells of the final table: category and version stay whole, the rest gives way.

    With several categories a mean row follows; ``reference`` (``{"label": ..., "test/image_auroc": 0.909}``)
    adds the published figures to compare with.
    """
    metrics = _metric_columns(rows)
    columns = [
        Column("category", keep=True, markup=True),  # the mean row's label is bold
        Column("model", rank=3),
        Column("status", keep=True, markup=True),
        *(Column(label, "right", rank=10 - i) for i, (_, label) in enumerate(metrics)),
        Column("minutes", "right", rank=1),
        Column("version", "right", keep=True),
    ]
    cells = [
        [
            escape(row.category),
            row.model,
            "[green]FINISHED[/]" if row.status == "FINISHED" else f"[red]{row.status}[/]",
            *(_fmt_pct(row.metrics.get(key)) for key, _ in metrics),
            f"{row.minutes:.1f}",
            row.registered_version or "-",
        ]
        for row in rows
    ]
    if len(rows) > 1:
        cells.append(["[bold]mean[/]", "", "", *_mean_cells(rows, metrics), "", ""])
    if reference:
        label = str(reference.get("label", "paper"))
        cells.append([label, "", "", *(_fmt_pct(reference.get(k)) for k, _ in metrics), "", ""])
    return columns, cells


def results_table(
    rows: list[ResultRow], title: str = "results", width: int | None = None, reference: dict[str, Any] | None = None
) -> Table:
    """The final table: one line per category with test metrics, minutes and registered version."""
    return fit_table(title, *results_cells(rows, reference), width=width)[0]


def results_markdown(rows: list[ResultRow], reference: dict[str, Any] | None = None) -> str:
    """The final table as GitHub markdown (percentages), failures listed below it."""
    columns = _metric_columns(rows)
    headers = ["category", "model", "status", *(label for _, label in columns), "minutes", "version"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [
            row.category,
            row.model,
            row.status,
            *(_fmt_pct(row.metrics.get(key)) for key, _ in columns),
            f"{row.minutes:.1f}",
            row.registered_version or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        lines.append("| **mean** | | | " + " | ".join(_mean_cells(rows, columns)) + " | | |")
    if reference:
        refs = " | ".join(_fmt_pct(reference.get(k)) for k, _ in columns)
        lines.append(f"| {reference.get('label', 'paper')} | | | {refs} | | |")
    failed = [row for row in rows if row.error]
    if failed:
        lines.append("")
        lines.extend(f"- **{row.category}** failed: {row.error}" for row in failed)
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, rows: list[ResultRow], extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Save the results table as ``results.md`` and ``results.json`` in the run folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    md_path = run_dir / "results.md"
    json_path = run_dir / "results.json"
    md_path.write_text(results_markdown(rows))
    payload = {**(extra or {}), "categories": [row.to_dict() for row in rows]}
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    return md_path, json_path
