"""`adkd train` (one category, in this process) and `adkd evaluate` (re-score a saved model).

Extension points for the platform layer:
- ``CALLBACK_FACTORIES``: functions ``(config) -> TrainCallback`` appended here are attached to
  every single-category run by ``build_callbacks`` (e.g. MLflow tracking).
- ``run_single(config, callbacks, resume)`` is the single-category path, importable on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adkd.cli import gate_flags
from adkd.errors import ConfigError
from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig

console = Console()

CALLBACK_FACTORIES: list[Callable[[TrainConfig], TrainCallback]] = []

METRIC_ROWS = (
    ("test/image_auroc", "image AUROC"),
    ("test/pixel_auroc", "pixel AUROC"),
    ("test/aupro", "AUPRO (FPR ≤ 0.3)"),
    ("test/f1_max", "image F1-max"),
)


class RichProgress(NullCallback):
    """An epoch bar with the latest losses, for an interactive single-category run."""

    def __init__(self, config: TrainConfig, out: Console | None = None) -> None:
        self.total = config.ae_pretrain_epochs + config.epochs
        self.label = f"{config.model}/{config.category}"
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            console=out or console,
            transient=False,
        )
        self.task: Any = None

    def on_start(self, config: dict[str, Any]) -> None:
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=self.total, loss="")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("loss")]
        self.progress.update(self.task, completed=epoch, loss="  ".join(shown))

    def on_end(self, result: TrainResult) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"{self.label} {result.status.lower()}")
        self.progress.stop()


def build_callbacks(config: TrainConfig, progress: bool = True) -> list[TrainCallback]:
    """The callbacks of a single-category run: the progress bar, then every registered factory."""
    callbacks: list[TrainCallback] = [RichProgress(config)] if progress else []
    callbacks.extend(factory(config) for factory in CALLBACK_FACTORIES)
    return callbacks


def local_data(data: str, category: str | None = None) -> str:
    """s3:// data is synced (only ``category`` when given) to the local cache; the engine reads folders.

    A local folder comes back absolute: Ray Tune runs each trial in a folder of its own.
    """
    if not data.startswith("s3://"):
        return str(Path(data).expanduser().resolve())
    from adkd.platform.s3 import sync_dataset

    return str(sync_dataset(data, categories=[category] if category else None))


def _check_local_category(config: TrainConfig) -> None:
    if config.data.startswith("s3://"):
        return
    root = Path(config.data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} does not exist; pass the folder that holds the category folders")
    if not (root / config.category).is_dir():
        raise ConfigError(
            f"category {config.category!r} not found under {root}; pick one of its folders or check --data"
        )


def run_single(config: TrainConfig, callbacks: Sequence[TrainCallback] = (), resume: bool = False) -> TrainResult:
    """Train one category in this process (s3:// data synced first)."""
    from adkd.pipelines.train.engine import train_category

    if config.data.startswith("s3://"):
        config = config.model_copy(update={"data": local_data(config.data, config.category)})
    return train_category(config, callbacks, resume=resume)


def metrics_table(title: str, metrics: dict[str, float], thresholds: dict[str, float] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, name in METRIC_ROWS:
        value = metrics.get(key)
        if value is None:  # absent: e.g. pixel metrics of an image-level data set
            continue
        table.add_row(name, "n/a" if value != value else f"{100 * value:.2f} %")
    for key, name in (("image", "image threshold"), ("pixel", "pixel threshold")):
        if thresholds and key in thresholds:
            table.add_row(name, f"{thresholds[key]:.4g}")
    return table


def resolve_cli_config(
    model: str,
    preset: str | None,
    category: str,
    data: str,
    overrides: Sequence[str],
    config_file: Path | None,
    out: Path | None,
    skip_validation: bool,
) -> TrainConfig:
    """Preset < settings file (`[train]` table) < --config < --set < explicit flags."""
    from adkd.pipelines.train.presets import resolve_config
    from adkd.settings import load_settings

    settings_file = config_file if config_file is not None and config_file.suffix == ".toml" else None
    settings = load_settings(settings_file)
    extra = list(overrides)
    if out is not None:
        extra.append(f"out_dir={out}")
    if skip_validation:
        extra.append("skip_validation=true")
    return resolve_config(
        model,
        preset,
        category=category,
        data=data,
        overrides=extra,
        config_file=config_file,
        defaults={"out_dir": str(settings.runs_dir / "train")},
        settings=settings.train,
    )


def train(
    category: str = typer.Option(..., "--category", "-c", help="Category folder under the data root."),
    data: str = typer.Option(..., "--data", "-d", help="Data root (MVTec layout): a folder or s3://bucket/prefix."),
    model: str = typer.Option(..., "--model", "-m", help="rd, mrkd, stfpm or stfpm-ae."),
    preset: str = typer.Option("paper", "--preset", "-p", help="paper, cpu-smoke or bottle-mobilenet."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a setting: key=value (dotted keys)."),
    config_file: Path | None = typer.Option(None, "--config", help="YAML/JSON/TOML file of training settings."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default adkd-runs/train)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    skip_validation: bool = typer.Option(False, "--skip-validation", help="Train without the data gate."),
    one_size: bool = gate_flags.ONE_SIZE,
    allow_mixed_modes: bool = gate_flags.ALLOW_MIXED_MODES,
    min_train: int = gate_flags.MIN_TRAIN,
    image_level: bool = gate_flags.IMAGE_LEVEL,
) -> None:
    """Train one model on one category and evaluate it on the test split."""
    gate = gate_flags.gate_options(one_size, allow_mixed_modes, min_train, image_level).overrides()
    config = resolve_cli_config(model, preset, category, data, [*set_, *gate], config_file, out, skip_validation)
    _check_local_category(config)  # before any tracking run is created
    result = run_single(config, build_callbacks(config), resume=resume)
    for note in result.notes:
        console.print(f"[dim]note:[/] {note}")
    if result.status != "FINISHED":
        console.print(f"[bold red]training failed:[/] {result.error} (see {result.run_dir}/error.txt)")
        raise typer.Exit(1)
    console.print(metrics_table(f"{config.model} on {config.category}", result.metrics, result.thresholds))
    console.print(f"run folder: {result.run_dir}   model: {result.checkpoint_path}")


def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by `adkd train`."),
    data: str = typer.Option(..., "--data", "-d", help="Data root (MVTec layout)."),
    category: str | None = typer.Option(None, "--category", "-c", help="Default: the checkpoint's category."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default beside the checkpoint)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Re-evaluate a trained model on a data root with its stored thresholds."""
    from adkd.pipelines.train.engine import evaluate_checkpoint

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device}: use auto, cpu or cuda")
    metrics = evaluate_checkpoint(checkpoint, local_data(data, category), category, out, device=device)
    console.print(metrics_table(f"{checkpoint} on {category or 'its category'}", metrics))


def register(app: typer.Typer) -> None:
    from adkd.cli.train_all import with_all_categories

    app.command("train")(with_all_categories(train))
    app.command("evaluate")(evaluate)
