"""What a training command shows: the epoch bar of one category, the metrics table, the results of many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adkd.pipelines.evaluate.metric_names import METRIC_LABELS, METRIC_NAMES, logged_key
from adkd.pipelines.train.callbacks import NullCallback, TrainResult

LABEL_NOTES = {"aupro": " (FPR ≤ 0.3)"}


class RichProgress(NullCallback):
    """An epoch bar with the latest losses, for an interactive single-category run."""

    def __init__(self, out: Console) -> None:
        self.label = ""
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        self.task: Any = None

    def on_start(self, config: dict[str, Any]) -> None:
        self.label = f"{config['model']}/{config['category']}"
        total = int((config.get("model_options") or {}).get("ae_pretrain_epochs") or 0) + int(config["epochs"])
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=total, loss="")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("loss")]
        self.progress.update(self.task, completed=epoch, loss="  ".join(shown))

    def on_end(self, result: TrainResult) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{self.label} {result.status.lower()}")
        self.progress.stop()


def metrics_table(title: str, metrics: dict[str, float], thresholds: dict[str, float] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in METRIC_NAMES:
        value = metrics.get(logged_key(name))
        if value is None:  # absent: e.g. pixel metrics of an image-level data set
            continue
        label = METRIC_LABELS[name] + LABEL_NOTES.get(name, "")
        table.add_row(label, "n/a" if value != value else f"{100 * value:.2f} %")
    for key, name in (("image", "image threshold"), ("pixel", "pixel threshold")):
        if thresholds and key in thresholds:
            table.add_row(name, f"{thresholds[key]:.4g}")
    return table


def print_one(console: Console, result: TrainResult) -> bool:
    """The notes, then the metrics table or the failure; True when the run finished."""
    # Notes, errors and paths are the run's text, not markup: "[batch, 64, 64, 3]" would be read as a style tag.
    for note in result.notes:
        console.print(f"[dim]note:[/] {escape(note)}")
    if result.status != "FINISHED":
        console.print(f"[bold red]training failed:[/] {escape(f'{result.error} (see {result.run_dir}/error.txt)')}")
        return False
    console.print(metrics_table(f"{result.model} on {result.category}", result.metrics, result.thresholds))
    console.print(f"run folder: {result.run_dir}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"model: {result.checkpoint_path}", soft_wrap=True, highlight=False, markup=False)
    if result.onnx_path:
        console.print(f"ONNX: {result.onnx_path}", soft_wrap=True, highlight=False, markup=False)
    return True


def print_many(console: Console, many: Any, model: str, data: str) -> None:
    """The results table of a multi-category run (with a data set's reference figures), failures, files."""
    from adkd.pipelines.data.protocol import read_reference
    from adkd.platform.cluster.results import results_cells, results_markdown
    from adkd.platform.console.tables import print_table

    outcome = many.outcome
    reference = read_reference(data)  # e.g. the paper's mean for `adkd data download cifar10`
    n = len(outcome.rows)
    title = f"{model} on {n} {'category' if n == 1 else 'categories'}"
    more = "the results files below hold every column"
    print_table(console, title, *results_cells(outcome.rows, reference), more=more)
    if reference and outcome.markdown_path is not None:
        Path(outcome.markdown_path).write_text(results_markdown(outcome.rows, reference))
    for row in outcome.rows:
        if row.error:
            console.print(f"[red]{escape(row.category)} failed:[/] {escape(str(row.error))}", highlight=False)
    console.print(
        f"results: {outcome.markdown_path} and {outcome.json_path}  ({outcome.wall_s / 60:.1f} min)", markup=False
    )
    if many.tracking_message:
        console.print(many.tracking_message, markup=False)
