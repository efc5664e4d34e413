"""The `adkd benchmark` report: per row and category the test metrics beside the paper's, the best row marked.

``BenchmarkReport`` holds the numbers (fractions inside, percent on show) and writes ``benchmark.md``,
``benchmark.json`` and a self-contained ``benchmark.html`` (tables and one inline-SVG bar chart per metric;
no external assets, so the file can be mailed or logged to MLflow as is).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adkd.pipelines.evaluate.metric_names import METRIC_LABELS, QUALITY_METRICS

QUALITY = tuple((name, METRIC_LABELS[name]) for name in QUALITY_METRICS)
COST = (("minutes", "training minutes"), ("ms_per_image", "ms per image"))
NOT_RUN = "NOT RUN"
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


@dataclass
class Cell:
    """One (row, category) outcome; metrics are fractions, None when absent (never 0 or NaN)."""

    status: str  # FINISHED, FAILED or NOT RUN
    image_auroc: float | None = None
    pixel_auroc: float | None = None
    aupro: float | None = None
    minutes: float | None = None
    ms_per_image: float | None = None
    epochs_run: int | None = None
    reason: str | None = None  # why it failed or did not run
    run_id: str | None = None  # the MLflow child run
    registered_version: str | None = None
    registered_name: str | None = None  # the registered model the version went to
    promoted: str | None = None  # what --promote did

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


@dataclass
class ReportRow:
    label: str
    model: str
    preset: str
    sets: list[str]
    paper: dict[str, dict[str, float]]  # "mean" | category → metric → percent


@dataclass
class BenchmarkReport:
    """Everything the report files show."""

    grid: str
    title: str
    data: str
    metric: str
    rows: list[ReportRow]
    categories: list[str]
    cells: dict[str, dict[str, Cell]]  # row label → category → cell
    paper_source: str = ""
    paper_notes: str = ""
    deviations: list[str] = field(default_factory=list)
    grid_categories: list[str] = field(default_factory=list)  # what the paper's means are over
    run: dict[str, Any] = field(default_factory=dict)  # run id, wall time, MLflow parent, command

    @property
    def tie_break(self) -> str:
        return "aupro" if self.metric != "aupro" else "image_auroc"

    def best(self) -> dict[str, str | None]:
        """Per category the row with the highest (metric, tie-break) among finished runs."""
        out: dict[str, str | None] = {}
        for category in self.categories:
            best: tuple[tuple[float, float], str] | None = None
            for row in self.rows:
                cell = self.cells[row.label][category]
                if cell.status != "FINISHED" or _num(cell.value(self.metric)) is None:
                    continue
                key = (_key(cell.value(self.metric)), _key(cell.value(self.tie_break)))
                if best is None or key > best[0]:  # a full tie keeps the earlier row of the grid
                    best = (key, row.label)
            out[category] = best[1] if best else None
        return out

    def mean(self, label: str, metric: str) -> float | None:
        values = [_num(self.cells[label][c].value(metric)) for c in self.categories]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    def finished(self, label: str) -> int:
        return sum(self.cells[label][c].status == "FINISHED" for c in self.categories)

    # ---------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        best = self.best()
        rows = []
        for row in self.rows:
            means = {m: self.mean(row.label, m) for m, _ in (*QUALITY, *COST)}
            rows.append(
                {
                    **asdict(row),
                    "mean": means,
                    "categories_finished": self.finished(row.label),
                    "categories": {c: asdict(self.cells[row.label][c]) for c in self.categories},
                    "best_in": [c for c in self.categories if best[c] == row.label],
                }
            )
        return {
            "grid": self.grid,
            "title": self.title,
            "data": self.data,
            "metric": self.metric,
            "tie_break": self.tie_break,
            "categories": self.categories,
            "best": best,
            "paper_source": self.paper_source,
            "paper_notes": self.paper_notes,
            "deviations_from_paper": self.deviations,
            "grid_categories": self.grid_categories,
            "run": self.run,
            "rows": rows,
        }

    def write(self, out_dir: Path) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "md": out_dir / "benchmark.md",
            "json": out_dir / "benchmark.json",
            "html": out_dir / "benchmark.html",
        }
        paths["md"].write_text(to_markdown(self))
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        paths["html"].write_text(to_html(self))
        return paths


def _num(value: Any) -> float | None:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _key(value: Any) -> float:
    v = _num(value)
    return -math.inf if v is None else v


def _pct(value: Any) -> str:
    v = _num(value)
    return "-" if v is None else f"{100 * v:.1f}"


def _paper(value: Any) -> str:
    v = _num(value)
    return "" if v is None else f"{v:.1f}"


def _plain(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.{digits}f}"


# ----------------------------------------------------------------------------------------- markdown


def _header_lines(report: BenchmarkReport) -> list[str]:
    lines = [f"# Benchmark: {report.title or report.grid}", ""]
    lines.append(f"Grid `{report.grid}` on `{report.data}`; categories: {', '.join(report.categories)}.")
    if report.run.get("command"):
        lines += ["", f"    {report.run['command']}"]
    lines.append("")
    if report.deviations:
        lines.append("**Differs from the paper's settings** (command-line overrides): " + "; ".join(report.deviations))
    else:
        lines.append("Runs use the grid's (paper) settings: no override of backbone, image size, epochs or weights.")
    lines.append("")
    lines.append(
        f"Best row per category (★) by {_label(report.metric)}, ties by {_label(report.tie_break)}. "
        "Values in percent; a paper value follows in parentheses where the grid gives one."
    )
    if report.paper_source:
        lines += ["", f"Paper: {report.paper_source}"]
    if report.grid_categories and set(report.grid_categories) != set(report.categories):
        lines += [
            "",
            f"The paper's means are over the grid's {len(report.grid_categories)} categories; this run covers "
            f"{len(report.categories)}, so compare its means with them with care.",
        ]
    if report.paper_notes:
        lines += ["", report.paper_notes]
    if report.run.get("wall_s") is not None:
        lines += ["", f"Wall time {report.run['wall_s'] / 60:.1f} min; run {report.run.get('run_id', '-')}."]
    return lines


def _label(metric: str) -> str:
    return dict((*QUALITY, *COST)).get(metric, metric)


def _with_paper(value: Any, paper: Any, star: bool = False) -> str:
    text = _pct(value) + (" ★" if star else "")
    if _num(paper) is not None:
        text += f" ({_paper(paper)})"
    return text


def to_markdown(report: BenchmarkReport) -> str:
    best = report.best()
    lines = _header_lines(report)
    lines += ["", "## Mean over categories", ""]
    head = ["row", "model", *(label for _, label in QUALITY), "minutes", "ms/image", "categories run"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        cells = [row.label, row.model]
        cells += [_with_paper(report.mean(row.label, m), row.paper.get("mean", {}).get(m)) for m, _ in QUALITY]
        cells += [_plain(report.mean(row.label, "minutes")), _plain(report.mean(row.label, "ms_per_image"))]
        cells.append(f"{report.finished(row.label)}/{len(report.categories)}")
        lines.append("| " + " | ".join(cells) + " |")
    for metric, label in QUALITY:
        lines += ["", f"## {label} per category", ""]
        lines += ["| row | " + " | ".join(report.categories) + " |", "|---|" + "---|" * len(report.categories)]
        for row in report.rows:
            cells = []
            for c in report.categories:
                cell = report.cells[row.label][c]
                if cell.status != "FINISHED":
                    cells.append(cell.status.lower())
                else:
                    paper = row.paper.get(c, {}).get(metric)
                    cells.append(_with_paper(cell.value(metric), paper, best[c] == row.label))
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost per category (training minutes / ms per image)", ""]
    lines += ["| row | " + " | ".join(report.categories) + " |", "|---|" + "---|" * len(report.categories)]
    for row in report.rows:
        cells = []
        for c in report.categories:
            cell = report.cells[row.label][c]
            cost = f"{_plain(cell.minutes)} / {_plain(cell.ms_per_image)}"
            cells.append(cost if cell.status == "FINISHED" else "-")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    problems = [
        (row.label, c, report.cells[row.label][c])
        for row in report.rows
        for c in report.categories
        if report.cells[row.label][c].status != "FINISHED"
    ]
    if problems:
        lines += ["", "## Not run or failed", "", "| row | category | status | why |", "|---|---|---|---|"]
        lines += [f"| {r} | {c} | {cell.status} | {_md(cell.reason or '')} |" for r, c, cell in problems]
    registered = [
        (c, best[c], report.cells[best[c]][c]) for c in report.categories if best[c] and _registered(report, c)
    ]
    if registered:
        lines += ["", "## Registered best models", "", "| category | row | version | promotion |", "|---|---|---|---|"]
        for c, r, cell in registered:
            lines.append(f"| {c} | {r} | {cell.registered_version or '-'} | {_md(cell.promoted or '-')} |")
    lines += ["", "## Settings per row", ""]
    lines += [f"- **{row.label}**: `{row.model}`, preset `{row.preset}`, {_sets(row.sets)}" for row in report.rows]
    return "\n".join(lines) + "\n"


def _registered(report: BenchmarkReport, category: str) -> bool:
    label = report.best()[category]
    return label is not None and report.cells[label][category].registered_version is not None


def _sets(sets: list[str]) -> str:
    return ", ".join(f"`{s}`" for s in sets) if sets else "no --set"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------------- html


def _svg_chart(report: BenchmarkReport, metric: str, label: str, percent: bool) -> str:
    """Grouped bars: one group per category plus the mean, one bar per row; paper values as black ticks."""
    groups = [*report.categories, "mean"]
    n_rows = max(len(report.rows), 1)
    bar_w, gap, left, top, height = 14, 18, 48, 28, 180
    group_w = n_rows * bar_w + gap
    legend_w = sum(24 + 7 * len(row.label) for row in report.rows) + 60
    width = max(left + len(groups) * group_w + 20, left + legend_w, 320)
    values: list[tuple[int, int, float | None, float | None]] = []
    for g, group in enumerate(groups):
        for r, row in enumerate(report.rows):
            if group == "mean":
                value, paper = report.mean(row.label, metric), row.paper.get("mean", {}).get(metric)
            else:
                cell = report.cells[row.label][group]
                value = cell.value(metric) if cell.status == "FINISHED" else None
                paper = row.paper.get(group, {}).get(metric)
            value = _num(value)
            shown = None if value is None else (100 * value if percent else value)
            values.append((g, r, shown, _num(paper) if percent else None))
    numbers = [v for _, _, v, _ in values if v is not None] + [p for _, _, _, p in values if p is not None]
    top_value = 100.0 if percent else max(numbers, default=1.0) * 1.1 or 1.0
    low = 0.0
    if percent and numbers:
        low = max(0.0, math.floor(min(numbers) / 10) * 10 - 10)
    span = max(top_value - low, 1e-9)

    def y(v: float) -> float:
        return top + height * (1 - (min(max(v, low), top_value) - low) / span)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 60}" '
        f'role="img" aria-label="{html.escape(label)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(label)}</text>',
    ]
    for tick in range(5):
        v = low + span * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.4g}</text>')
    for g, r, value, paper in values:
        x = left + g * group_w + r * bar_w
        colour = PALETTE[r % len(PALETTE)]
        if value is not None:
            parts.append(
                f'<rect x="{x}" y="{y(value):.1f}" width="{bar_w - 2}" height="{top + height - y(value):.1f}" '
                f'fill="{colour}"><title>{html.escape(report.rows[r].label)}: {value:.2f}</title></rect>'
            )
        if paper is not None:
            parts.append(
                f'<line x1="{x - 1}" x2="{x + bar_w - 1}" y1="{y(paper):.1f}" y2="{y(paper):.1f}" '
                f'stroke="#000" stroke-width="2.5"><title>paper: {paper:.1f}</title></line>'
            )
    for g, group in enumerate(groups):
        x = left + g * group_w + (n_rows * bar_w) / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + height + 14}" font-size="10" text-anchor="middle">{html.escape(group)}</text>'
        )
    legend_y = top + height + 34
    x = left
    for r, row in enumerate(report.rows):
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{PALETTE[r % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{html.escape(row.label)}</text>')
        x += 24 + 7 * len(row.label)
    if percent and any(p is not None for *_, p in values):
        tick_y = legend_y - 4
        parts.append(f'<line x1="{x}" x2="{x + 12}" y1="{tick_y}" y2="{tick_y}" stroke="#000" stroke-width="2.5"/>')
        parts.append(f'<text x="{x + 16}" y="{legend_y}" font-size="11">paper</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(markdown_table: list[str]) -> str:
    """A markdown pipe table (header, separator, rows) as an HTML table."""
    out = ["<table>"]
    for i, line in enumerate(markdown_table):
        if i == 1:
            continue
        cells = [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def to_html(report: BenchmarkReport) -> str:
    """The markdown report's text and tables as HTML, with one bar chart per metric."""
    body: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            body.append(_html_table(table))
            table.clear()

    for line in to_markdown(report).splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("    "):
            body.append(f"<pre>{html.escape(line.strip())}</pre>")
        elif line.startswith("- "):
            body.append(f"<p>• {html.escape(line[2:].replace('`', '').replace('**', ''))}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.replace('`', '').replace('**', ''))}</p>")
    flush()
    charts = [_svg_chart(report, m, label + " (%)", True) for m, label in QUALITY]
    charts += [_svg_chart(report, m, label, False) for m, label in COST]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}pre{background:#f4f4f4;padding:6px;overflow-x:auto}"
        ".charts svg{margin:1em 1em 0 0}"
    )
    title = html.escape(report.title or report.grid)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>\n"
        + "\n".join(body[:1])
        + '\n<div class="charts">\n'
        + "\n".join(charts)
        + "\n</div>\n"
        + "\n".join(body[1:])
        + "\n</body></html>\n"
    )
