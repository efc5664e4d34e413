"""`adkd train` (one category here, or many at once on Ray) and `adkd evaluate` (re-score a saved model)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from adkd.cli import gate_flags, resource_flags, tracking_flags

console = Console()


def train(
    category: str | None = typer.Option(None, "--category", "-c", help="Category folder under the data root."),
    data: str = typer.Option(..., "--data", "-d", help="Data root (MVTec layout): a folder or s3://bucket/prefix."),
    model: str = typer.Option(..., "--model", "-m", help="rd, mrkd, stfpm or stfpm-ae."),
    preset: str = typer.Option("paper", "--preset", "-p", help="paper, cpu-smoke or bottle-mobilenet."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a setting: key=value (dotted keys)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="YAML/JSON/TOML file of training settings (a TOML file is also the settings file)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default adkd-runs/train; with several categories adkd-runs)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    skip_validation: bool = typer.Option(False, "--skip-validation", help="Train without the data gate."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not write MLflow runs or register models."),
    experiment_name: str | None = tracking_flags.EXPERIMENT_NAME,
    run_name: str | None = tracking_flags.RUN_NAME,
    one_size: bool = gate_flags.ONE_SIZE,
    allow_mixed_modes: bool = gate_flags.ALLOW_MIXED_MODES,
    min_train: int = gate_flags.MIN_TRAIN,
    image_level: bool = gate_flags.IMAGE_LEVEL,
    all_categories: bool = typer.Option(
        False, "--all-categories", help="Train every category under --data at once on Ray (one model each)."
    ),
    categories: str | None = typer.Option(
        None, "--categories", help="Comma-separated categories to train at once on Ray, e.g. bottle,cable."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (default RAY_ADDRESS; none = an embedded local Ray)."
    ),
    workers_per_run: int | None = resource_flags.WORKERS_PER_RUN,
    cpus_per_worker: float | None = resource_flags.CPUS_PER_WORKER,
    gpus_per_worker: float | None = resource_flags.GPUS_PER_WORKER,
    max_failures: int = typer.Option(
        2, "--max-failures", help="Restarts of a category after a crash (from checkpoint)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Run storage for checkpoints: a path all nodes see or s3://bucket/prefix."
    ),
    num_cpus: int | None = typer.Option(
        None, "--num-cpus", help="CPUs of the embedded local Ray (default: this machine's)."
    ),
    workers_per_category: int | None = resource_flags.old_name("--workers-per-category"),
    cpus_per_category: float | None = resource_flags.old_name("--cpus-per-category"),
    gpus_per_category: float | None = resource_flags.old_name("--gpus-per-category"),
) -> None:
    """Train one model on one category and evaluate it on the test split.

    With --all-categories or --categories: every category at once on Ray (one model each).
    """
    from adkd.cli.run_output import RichProgress, print_many, print_one
    from adkd.platform.runs import RunRequest, run_settings, train_many, train_one

    gate = gate_flags.gate_options(one_size, allow_mixed_modes, min_train, image_level).overrides()
    request = RunRequest(
        model=model,
        data=data,
        category=category,
        categories=None if categories is None else [c.strip() for c in categories.split(",") if c.strip()],
        all_categories=all_categories,
        preset=preset,
        overrides=[*set_, *gate],
        config_file=config_file,
        out=out,
        skip_validation=skip_validation,
        tracking=not no_tracking,
        resume=resume,
        run_name=run_name,
    )
    request.check()
    if not request.many:
        settings = run_settings(config_file, experiment=experiment_name)
        if not print_one(console, train_one(request, settings, [RichProgress(console)])):
            raise typer.Exit(1)
        return
    from adkd.cli.live_board import LiveBoard

    pick = resource_flags.pick
    plan = resource_flags.ray_plan(
        address=address,
        workers_per_run=pick(workers_per_run, "--workers-per-run", {"--workers-per-category": workers_per_category}),
        cpus_per_worker=pick(cpus_per_worker, "--cpus-per-worker", {"--cpus-per-category": cpus_per_category}),
        gpus_per_worker=pick(gpus_per_worker, "--gpus-per-worker", {"--gpus-per-category": gpus_per_category}),
        max_failures=max_failures,
        storage=storage,
        num_cpus=num_cpus,
    )
    with LiveBoard(console) as board:
        settings = run_settings(config_file, ray_address=address, experiment=experiment_name)
        many = train_many(request, settings, plan, [board])
    print_many(console, many, model, data)
    if many.failed:
        raise typer.Exit(1)


def evaluate(
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "--model",
        "-m",
        help="model.pt written by `adkd train` (its model.onnx is scored), an .onnx file, models:/adkd-CAT@ALIAS, "
        "models:/adkd-CAT/N or a run id.",
    ),
    data: str = typer.Option(..., "--data", "-d", help="Data root (MVTec layout)."),
    category: str | None = typer.Option(None, "--category", "-c", help="Default: the model's category."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default beside the model)."),
    runtime: str = typer.Option(
        "onnxruntime", "--runtime", help="What scores the file: onnxruntime (the reference), openvino, auto."
    ),
) -> None:
    """Score a data root's test split through the model's exported file and its stored thresholds.

    The numbers are the shipped model's, the same on any host (adkd.pipelines.evaluate.report states the tolerance).
    """
    from adkd.cli.run_output import metrics_table
    from adkd.pipelines.train.artifacts import evaluate_checkpoint
    from adkd.platform.storage.data_roots import local_root
    from adkd.settings import load_settings

    settings = load_settings()
    model = Path(checkpoint)
    if not model.is_file() and not checkpoint.endswith((".pt", ".onnx")):  # a version, a run's model, a folder
        from adkd.platform.registry.resolve import resolve_onnx

        model, origin = resolve_onnx(checkpoint, settings.resolved_tracking_uri, settings.cache_dir)
        if out is None and ("name" in origin or "run_id" in origin):  # not into the download cache
            label = f"{origin['name']}-v{origin['version']}" if "name" in origin else f"run-{origin['run_id']}"
            out = settings.runs_dir / "evaluate" / label
    root = local_root(data, settings.cache_dir, settings.s3_endpoint_url, [category] if category else None)
    metrics = evaluate_checkpoint(model, str(root), category, out, runtime=runtime)
    console.print(metrics_table(f"{checkpoint} on {category or 'its category'}", metrics))
    if out is not None:
        console.print(f"report: {out}", soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
