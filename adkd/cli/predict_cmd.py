"""`adkd predict`: score images with an exported or registered model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def predict(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or globs."),
    model: str = typer.Option(
        ..., "--model", "-m", help="models:/adkd-CAT@production, models:/adkd-CAT/N, a path to .onnx or a run id."
    ),
    out: Path = typer.Option(Path("adkd-predictions"), "--out", "-o", help="Folder for overlays, masks, CSV, JSON."),
    batch_size: int = typer.Option(8, min=1, help="Images per ONNX Runtime call."),
    threshold: float = typer.Option(None, help="Raw image-score threshold (default: the model's stored one)."),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: settings / MLFLOW_TRACKING_URI)."),
    int8: bool = typer.Option(False, "--int8", help="Use the model's int8 ONNX file (CPU inference)."),
    runtime: str = typer.Option(
        None,
        help="auto (the variant timed fastest at export), onnxruntime, openvino, openvino-bf16, onnxruntime-int8 "
        "or openvino-int8. Default: the runtime setting (ADKD_RUNTIME), auto.",
    ),
) -> None:
    """Score images: verdicts, heatmap overlays, masks, predictions.csv and summary.json."""
    from adkd.pipelines.predict.inputs import collect_inputs
    from adkd.settings import load_settings

    runtime = runtime or load_settings().runtime
    files = collect_inputs(inputs)  # a wrong path is known before the model is resolved (MLflow, ONNX Runtime)

    from adkd.api import load
    from adkd.pipelines.predict.folder import predict_files
    from adkd.pipelines.predict.outputs import write_summary

    detector = load(model, threshold=threshold, tracking_uri=tracking_uri, int8=int8, runtime=runtime)
    predictor = detector.predictor
    err_console.print(f"runtime: {detector.runtime} ({detector.runtime_reason})", highlight=False)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("predict", total=len(files))
        rows, failures = predict_files(
            predictor,
            files,
            out,
            batch_size=batch_size,
            on_skip=lambda exc: err_console.print(f"[red]skipped[/] {escape(str(exc))}", highlight=False),
            on_done=lambda n: progress.advance(task, n),
        )
    meta = {k: v for k, v in predictor.meta.items() if k in ("model", "backbone", "category", "image_size", "resize")}
    facts = {"runtime": detector.runtime, "image_threshold": predictor.image_threshold}
    write_summary(rows, failures, meta | detector.origin | facts, out)
    table = Table(title=f"{len(rows)} images scored with {detector.origin.get('source')}")
    for col in ("verdict", "images"):
        table.add_column(col)
    for verdict in ("anomalous", "normal"):
        table.add_row(verdict, str(sum(r["verdict"] == verdict for r in rows)))
    if failures:
        table.add_row("[red]failed[/]", str(len(failures)))
    console.print(table)
    console.print(f"results in {out}/predictions.csv, {out}/summary.json, overlays in {out}/overlays")
    converted = sum(bool(r["notes"]) for r in rows)
    if converted:
        console.print(
            f"{converted} image(s) were converted or resized to the model's input (see the notes column); "
            "maps and masks are at each image's own size"
        )
    if failures:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
