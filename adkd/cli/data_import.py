"""`adkd data import folder` (plain good/defect folders) and `adkd data import feedback` (the station's)."""

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


@import_app.command("feedback")
def feedback(
    category: str = typer.Argument(..., help="Category whose confirmed station feedback is imported."),
    out: Path = typer.Argument(..., help="Data root that receives OUT/<category> (the new data version)."),
    base: Path | None = typer.Option(
        None, "--base", help="Data root the model was trained on: its CATEGORY is copied in first (a full version)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT/<category> if it exists."),
    config_file: Path | None = typer.Option(None, "--config", help="adkd.toml (\\[station] database and store)."),
) -> None:
    """False alarms into train/good, confirmed defects into test/<type>; data gate; the `adkd train` to run next."""
    from adkd.platform.station.feedback_data import import_feedback, train_command
    from adkd.platform.station.images import open_store
    from adkd.platform.station.log import VerdictLog, default_url
    from adkd.settings import load_settings

    settings = load_settings(config_file)
    log = VerdictLog(settings.station.db_url or default_url(settings.runs_dir), create=False)
    try:
        store = open_store(settings.station.store, settings.runs_dir, settings.s3_endpoint_url)
        result = import_feedback(
            log, store, category, out, base=base, force=force,
            validation_dir=settings.runs_dir / "data-validation" / f"feedback-{category}",
        )  # fmt: skip
        latest = log.recent(category, limit=1)
        model = log.model(latest[0]["model_name"], latest[0]["model_version"]) if latest else None
    finally:
        log.close()
    console = Console()
    table = Table(title=escape(f"new data version {result.category_dir}" + (f" (from {base})" if base else "")))
    table.add_column("folder")
    table.add_column("files from feedback", justify="right")
    for where, count in sorted(result.added.items()):
        table.add_row(escape(where), str(count))
    for reason, count in sorted(result.skipped.items()):
        table.add_row(f"[dim]skipped: {escape(reason)}[/]", str(count))
    console.print(table)
    for note in result.notes:
        console.print(escape(note), highlight=False)
    console.print("[green]data gate passed[/]")
    family, preset = (model or {}).get("family") or "", (model or {}).get("preset") or ""
    command = train_command(category, out, family, preset, result.image_level)
    console.print(f"next, a challenger: {command}", highlight=False, soft_wrap=True)
    console.print(
        f"then: adkd registry promote {category} --version N --to production   (gated against the current holder)",
        highlight=False,
        soft_wrap=True,
    )


def register(data_app: typer.Typer) -> None:
    """Add `import` to the `adkd data` group."""
    data_app.add_typer(import_app, name="import")
