"""`adkd data import folder`: an MVTec-layout category from plain good/defect folders."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import_app = typer.Typer(help="Import data sets from other layouts.", no_args_is_help=True)


@import_app.command("folder")
def folder(
    root: Path = typer.Argument(..., help="Data root that receives ROOT/<category>/{train,test,ground_truth}."),
    category: str = typer.Option(..., "--category", "-c", help="Name of the category folder to create."),
    good: Path = typer.Option(..., "--good", help="Folder of normal images (split train/test unless --test-good)."),
    defect: list[str] = typer.Option(..., "--defect", help="NAME=DIR: a folder of defective images (repeatable)."),
    test_good: Path | None = typer.Option(None, "--test-good", help="Normal test images (then --good is all train)."),
    masks: Path | None = typer.Option(
        None, "--masks", help="Masks matched to defect images by file stem; without it the category is image-level."
    ),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of --good images held out for test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split."),
    copy: bool = typer.Option(False, "--copy", help="Copy the files (default: symbolic links to them)."),
    force: bool = typer.Option(False, "--force", help="Replace ROOT/<category> if it exists."),
) -> None:
    """Build ROOT/<category> in the MVTec layout from plain folders and print what went where."""
    from adkd.pipelines.data.import_folder import import_folder, parse_defects

    summary = import_folder(
        root, category, good, parse_defects(defect), test_good=test_good, masks=masks,
        test_fraction=test_fraction, seed=seed, mode="copy" if copy else "link", force=force,
    )  # fmt: skip
    table = Table(title=escape(f"imported {summary.category_dir} ({'copies' if copy else 'links'})"))
    for col in ("folder", "files", "from"):
        table.add_column(col, justify="right" if col == "files" else "left", overflow="fold")
    for name, count in summary.counts.items():
        table.add_row(name, str(count), escape(summary.sources[name]))
    console = Console()
    console.print(table)
    if not masks:
        console.print("no masks: the category is image-level (image AUROC only, no pixel metrics)")
    console.print(f"next: adkd data validate {root} --category {category}")


def register(data_app: typer.Typer) -> None:
    """Add `import` to the `adkd data` group."""
    data_app.add_typer(import_app, name="import")
