"""`adkd data download mvtec ROOT` (official MVTec AD archives) and `adkd data sync|upload` (S3 transfers)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

download_app = typer.Typer(help="Download public data sets.", no_args_is_help=True)


@download_app.command("mvtec")
def mvtec(
    root: Path = typer.Argument(..., help="Folder that receives ROOT/<category>/{train,test,ground_truth}."),
    categories: str | None = typer.Option(None, "--categories", help="Comma-separated categories (default: all 15)."),
    url_base: str | None = typer.Option(
        None,
        "--url-base",
        envvar="ADKD_MVTEC_URL",
        help="Mirror serving <category>.tar.xz files, instead of MVTec's links (env ADKD_MVTEC_URL).",
    ),
    checksums: Path | None = typer.Option(
        None, "--checksums", help="sha256sum-style file for a mirror with repacked archives."
    ),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep the .tar.xz files in ROOT/.downloads."),
    force: bool = typer.Option(False, "--force", help="Download and replace categories already in ROOT."),
    retries: int = typer.Option(3, "--retries", min=0, help="Automatic resumes after a dropped connection."),
) -> None:
    """Download MVTec AD categories into ROOT (resumes an interrupted download when run again)."""
    from adkd.pipelines.data.download import download_mvtec, read_checksums

    wanted = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    sums = read_checksums(checksums) if checksums else None
    console = Console(stderr=True)
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:

        def on_bytes(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        report = download_mvtec(
            root,
            wanted,
            url_base=url_base,
            checksums=sums,
            keep_archives=keep_archives,
            force=force,
            retries=retries,
            progress=on_bytes,
        )
    table = Table(title=f"MVTec AD in {report.root}")
    table.add_column("category")
    table.add_column("status")
    for category, status in report.categories.items():
        table.add_row(category, status)
    Console().print(table)


@download_app.command("cifar10")
def cifar10(
    root: Path = typer.Argument(..., help="Folder that receives one category per class: ROOT/<class>/{train,test}."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated class names or 0-9 (default: all)."),
    url_base: str | None = typer.Option(
        None,
        "--url-base",
        envvar="ADKD_CIFAR10_URL",
        help="Mirror serving cifar-10-python.tar.gz, instead of the official site (env ADKD_CIFAR10_URL).",
    ),
    md5: str | None = typer.Option(None, "--md5", help="MD5 of a mirror's repacked archive (default: the official)."),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the archive in ROOT/.downloads."),
    force: bool = typer.Option(False, "--force", help="Rebuild classes already in ROOT."),
    retries: int = typer.Option(3, "--retries", min=0, help="Automatic resumes after a dropped connection."),
) -> None:
    """One-class CIFAR-10: the official archive as one image-level category per class (others = anomalies)."""
    from adkd.pipelines.data.cifar10 import download_cifar10

    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task: list[TaskID] = []

        def on_bytes(name: str, done: int, total: int | None) -> None:
            if not task:
                task.append(progress.add_task(name, total=total))
            progress.update(task[0], completed=done, total=total)

        report = download_cifar10(
            root, wanted, url_base=url_base, md5=md5, keep_archive=keep_archive, force=force, retries=retries,
            progress=on_bytes,
        )  # fmt: skip
    table = Table(title=f"one-class CIFAR-10 in {report.root}")
    for col in ("class", "status", "train/good", "test/good", "test/anomaly"):
        table.add_column(col, justify="left" if col in ("class", "status") else "right")
    for name, status in report.categories.items():
        counts = report.counts.get(name)
        table.add_row(name, status, *(str(n) for n in counts) if counts else ("", "", ""))
    Console().print(table)
    Console().print(f"next: adkd train --all-categories --data {root} --model mrkd (the paper's mean: 90.9)")


def sync(
    uri: str = typer.Argument(..., help="s3://bucket/prefix holding an MVTec-layout data set."),
    categories: str | None = typer.Option(None, "--categories", help="Comma-separated: sync only these."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Local cache (default: settings cache_dir)."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint (MinIO, moto)."),
) -> None:
    """Sync an S3 data set into the local cache (only changed objects) and print the local root."""
    from adkd.platform.storage.s3 import sync_dataset
    from adkd.settings import load_settings

    settings = load_settings()
    wanted = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    root = sync_dataset(uri, cache_dir or settings.cache_dir, s3_endpoint or settings.s3_endpoint_url, wanted)
    typer.echo(str(root))


def upload(
    local: Path = typer.Argument(..., help="Folder to upload (data set, run folder, checkpoints)."),
    uri: str = typer.Argument(..., help="Destination s3://bucket/prefix."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint (MinIO, moto)."),
) -> None:
    """Upload every file under LOCAL to URI/<relative path>."""
    from adkd.platform.storage.s3 import upload_dir
    from adkd.settings import load_settings

    count = upload_dir(local, uri, s3_endpoint or load_settings().s3_endpoint_url)
    typer.echo(f"uploaded {count} files to {uri}")


def register(data_app: typer.Typer) -> None:
    """Add `download`, `sync` and `upload` to the `adkd data` group."""
    data_app.add_typer(download_app, name="download")
    data_app.command("sync")(sync)
    data_app.command("upload")(upload)
