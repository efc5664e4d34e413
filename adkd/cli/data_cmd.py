"""`adkd data ...`: make a synthetic data set and validate a data root before training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adkd.cli import gate_flags
from adkd.errors import DataError

# data_download.py and data_import.py add their commands to this group (see register).
data_app = typer.Typer(help="Create, fetch and validate data sets in the MVTec AD layout.", no_args_is_help=True)
console = Console()


def _split_names(values: list[str] | None) -> list[str] | None:
    """Accept both `--categories a,b` and `--categories a --categories b`."""
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


@data_app.command("synth")
def synth(
    root: Path = typer.Argument(..., help="Folder to write the data set into (categories in it are replaced)."),
    categories: list[str] = typer.Option(
        None, "--categories", "-c", help="Categories to make (comma-separated or repeated); default all six."
    ),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    train: int = typer.Option(32, "--train", help="Normal training images per category."),
    test: int = typer.Option(24, "--test", help="Test images per category (about a quarter good)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same files."),
    defect_scale: float = typer.Option(
        1.0,
        "--defect-scale",
        help="Size factor of texture defects and scratches (area by its square); 0.3 gives defects of about "
        "0.1-0.4 %% of the image, the small-defect case tiling is for.",
    ),
) -> None:
    """Write a deterministic synthetic data set (textures and objects, defects with exact masks)."""
    from adkd.pipelines.data.synthetic_dataset import synthesize

    summary = synthesize(
        root, _split_names(categories), size=size, n_train=train, n_test=test, seed=seed, defect_scale=defect_scale
    )
    table = Table(title=f"synthetic data set in {root}")
    for col in ("category", "train/good", "test/good", "test defective", "defect kinds"):
        table.add_column(col, justify="left" if col in ("category", "defect kinds") else "right")
    for name, counts in summary.items():
        kinds = [k.split("/", 1)[1] for k in counts if k.startswith("test/") and k != "test/good"]
        defective = sum(counts[f"test/{k}"] for k in kinds)
        table.add_row(name, str(counts["train"]), str(counts.get("test/good", 0)), str(defective), ", ".join(kinds))
    console.print(table)


def _print_report(report) -> None:
    table = Table(title=escape(f"data validation: {report.root} ({', '.join(report.categories)})"))
    for col in ("result", "rule", "expectation", "checked", "unexpected", "first offending files", "to accept"):
        table.add_column(col, justify="right" if col in ("checked", "unexpected") else "left", overflow="fold")
    for o in report.outcomes:
        mark = "[green]PASS[/]" if o.success else "[bold red]FAIL[/]"
        table.add_row(
            mark,
            escape(o.description),
            o.expectation,
            str(o.checked),
            str(o.unexpected),
            escape("\n".join(o.offenders[:3])),
            "" if o.success else escape(o.accept or "fix the files"),
        )
    console.print(table)
    sizes = Table(title="categories", show_lines=False)
    for col in ("category", "train/good", "test/good", "test defective", "labels", "image sizes", "modes"):
        sizes.add_column(col, overflow="fold")
    for r in report.category_table.to_dict(orient="records"):
        labels = "image-level" if r["image_level"] else "pixel masks"
        sizes.add_row(
            escape(r["category"]), str(r["n_train_good"]), str(r["n_test_good"]), str(r["n_test_defective"]),
            labels, escape(r["size_summary"]), escape(r["modes"]),
        )  # fmt: skip
    console.print(sizes)


@data_app.command("validate")
def validate(
    root: Path = typer.Argument(..., help="Data root holding CATEGORY/train/good, test, ground_truth."),
    category: list[str] = typer.Option(
        None, "--category", "-c", help="Category to check (repeatable or comma-separated); default all."
    ),
    out: Path = typer.Option(
        Path("adkd-runs") / "data-validation",
        "--out",
        help="Folder for the GX validation result (JSON), Data Docs (HTML) and fact tables.",
    ),
    min_train: int = gate_flags.MIN_TRAIN,
    one_size: bool = gate_flags.ONE_SIZE,
    allow_mixed_modes: bool = gate_flags.ALLOW_MIXED_MODES,
    image_level: bool = gate_flags.IMAGE_LEVEL,
) -> None:
    """Run the Great Expectations suite over per-file facts; exit code 2 when it fails."""
    from adkd.pipelines.data.validate import validate_data

    options = gate_flags.gate_options(one_size, allow_mixed_modes, min_train, image_level)
    report = validate_data(root, _split_names(category), out, **options.validate_kwargs())
    _print_report(report)
    console.print(f"reports: {out} (data_docs/index.html, report.html, gx_validation_result.json)")
    if not report.success:
        raise DataError(report.failure_message(skip="`adkd train --skip-validation` trains without the gate"))
    n = len(report.categories)
    console.print(f"[green]data valid[/]: {len(report.files)} files in {n} categor{'y' if n == 1 else 'ies'}")


def register(app: typer.Typer) -> None:
    from adkd.cli import data_download, data_import

    data_download.register(data_app)
    data_import.register(data_app)
    app.add_typer(data_app, name="data")
