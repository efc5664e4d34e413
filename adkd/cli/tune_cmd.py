"""`adkd tune`: search the FMM mask rate λ and the loss weight α per category with Ray Tune."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from adkd.cli import resource_flags, tracking_flags
from adkd.platform.console.tables import Column, print_table

console = Console(markup=False)  # names, paths and --set lines are text: "[openvino]" is not a style tag


def _categories(data: str, category: str | None, all_categories: bool) -> list[str]:
    from adkd.errors import ConfigError

    if bool(category) == all_categories:
        raise ConfigError("pass exactly one of --category NAME and --all-categories")
    from adkd.pipelines.data.mvtec import resolve_categories

    # Checked here, before Ray starts: a missing category would otherwise fail inside every trial.
    return resolve_categories(Path(data), [category] if category else None)


def _lr_range(text: str | None) -> tuple[float, float] | None:
    from adkd.errors import ConfigError

    if not text:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--tune-lr {text!r}: write LOW,HIGH, e.g. 1e-4,1e-2") from None
    if not 0 < low < high:
        raise ConfigError(f"--tune-lr {text!r}: need 0 < LOW < HIGH")
    return low, high


def _print_table(summary) -> None:
    columns = [Column("trial", keep=True)]
    columns += [Column(name, "right", rank=2) for name in summary.best.params]
    columns += [
        Column(f"val {summary.objective}", "right", keep=True),
        Column("epochs", "right", rank=1),
        Column("status", keep=True),
    ]
    rows = []
    for row in summary.trials:
        mark = (" *" if row is summary.best else "") + (" (preset)" if row.is_default else "")
        values = [f"{row.params[n]:.4g}" for n in summary.best.params]
        obj = "n/a" if row.objective != row.objective else f"{100 * row.objective:.2f} %"
        rows.append([row.trial_id + mark, *values, obj, str(row.epochs), row.status])
    title = f"adkd tune {summary.model}/{summary.category}: val {summary.objective} (synthetic defects)"
    print_table(console, title, columns, rows)


def tune(
    data: str = typer.Option(..., "--data", "-d", help="Data root (MVTec layout): a folder or s3://bucket/prefix."),
    model: str = typer.Option(
        "mrkd",
        "--model",
        "-m",
        help="mrkd (λ; α with the two_term loss) or stfpm-ae (α on a 0 + log grid, AE freeze epochs).",
    ),
    category: str = typer.Option(None, "--category", "-c", help="One category to tune."),
    all_categories: bool = typer.Option(False, "--all-categories", help="Tune every category under --data."),
    preset: str = typer.Option("cpu-smoke", "--preset", "-p", help="Base training preset of every trial."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a base setting: key=value."),
    config_file: Path = typer.Option(None, "--config", help="adkd.toml with \\[train] and \\[tune.space] tables."),
    num_samples: int = typer.Option(8, "--num-samples", min=1, help="Trials per category."),
    max_concurrent: int = typer.Option(None, "--max-concurrent", min=1, help="Trials running at once."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs per trial (ASHA may stop it sooner)."),
    search: str = typer.Option("random", "--search", help="random or bayes (Optuna TPE)."),
    grace_period: int = typer.Option(
        None, "--grace-period", min=1, help="Epochs before ASHA may stop a trial (default: a quarter of them)."
    ),
    objective: str = typer.Option("pixel_auroc", "--objective", help="pixel_auroc, image_auroc or aupro."),
    tune_lr: str = typer.Option(None, "--tune-lr", help="Also search the learning rate: LOW,HIGH (log-uniform)."),
    register_best: bool = typer.Option(False, "--register-best", help="Register the best trial's model."),
    no_tracking: bool = typer.Option(
        False, "--no-tracking", help="Write no MLflow runs (the trials' folders and the tune summary are kept)."
    ),
    experiment_name: str | None = tracking_flags.EXPERIMENT_NAME,
    run_name: str | None = tracking_flags.RUN_NAME,
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: local Ray)."),
    cpus_per_worker: float | None = resource_flags.CPUS_PER_WORKER,
    gpus_per_worker: float | None = resource_flags.GPUS_PER_WORKER,
    out: Path = typer.Option(None, "--out", "-o", help="Tune folder (default adkd-runs/tune)."),
    include_default: bool = typer.Option(
        True,
        "--include-preset/--no-include-preset",
        help="Make the preset's own λ/α the first trial, to compare against on the same objective.",
    ),
    cpus_per_trial: float | None = resource_flags.old_name("--cpus-per-trial"),
    gpus_per_trial: float | None = resource_flags.old_name("--gpus-per-trial"),
) -> None:
    """Tune the model's own knobs on normal images with synthetic defects; only the best sees the test split."""
    from adkd.errors import ConfigError
    from adkd.pipelines.evaluate.metric_names import QUALITY_METRICS, logged_key
    from adkd.pipelines.train.config import check_teacher_weights
    from adkd.platform.cluster.connection import connect
    from adkd.platform.cluster.resources import resources_for
    from adkd.platform.registry.publishing import RegistryPublisher
    from adkd.platform.runs import RunRequest, resolve_config, run_settings
    from adkd.platform.storage.data_roots import local_root
    from adkd.platform.tracking.session import TrackingSession
    from adkd.platform.tune.search import PARAM_TARGETS, log_to_mlflow, parse_space, run_tune, set_line

    settings = run_settings(config_file, ray_address=address, experiment=experiment_name)
    tracking = settings.tracking and not no_tracking  # ADKD_TRACKING=off: no MLflow run at all, as for train
    if register_best and not tracking:
        off = "--no-tracking" if no_tracking else "ADKD_TRACKING=off"
        raise ConfigError(f"--register-best registers the best trial in MLflow, which {off} turns off")
    local = str(local_root(data, settings.cache_dir, settings.s3_endpoint_url))
    categories = _categories(local, category, all_categories)
    request = RunRequest(model=model, data=local, preset=preset, overrides=list(set_), config_file=config_file)
    # The knobs depend on the model's settings (the mrkd paper loss has no α): read them from the first category.
    first = resolve_config(request, categories[0], settings)
    if not settings.ray_address:  # the trials train on this machine: its weights, before Ray or MLflow start
        check_teacher_weights(first)
    space = parse_space(model, settings.tune.get("space"), _lr_range(tune_lr), model_options=first.model_options)
    # A trial is one run on one worker: the same resource flags (and checks) as train and benchmark.
    plan = resource_flags.ray_plan(
        cpus_per_worker=resource_flags.pick(cpus_per_worker, "--cpus-per-worker", {"--cpus-per-trial": cpus_per_trial}),
        gpus_per_worker=resource_flags.pick(gpus_per_worker, "--gpus-per-worker", {"--gpus-per-trial": gpus_per_trial}),
    )
    resources = resources_for(plan, connect(settings.ray_address))  # checked before the MLflow run starts
    session = None
    if tracking:
        session = TrackingSession.from_settings(
            settings,
            data,
            "tune",
            publisher=RegistryPublisher(settings.registered_model_name),
            register=register_best,
            params={"model": model},
            run_name=run_name,
        )
        session.start_parent()
    status = "FINISHED"
    try:
        for cat in categories:
            base = resolve_config(request, cat, settings)
            summary = run_tune(
                base,
                num_samples=num_samples,
                max_concurrent=max_concurrent,
                epochs=epochs,
                search=search,
                objective=objective,
                space=space,
                cpus_per_worker=resources.cpus,
                gpus_per_worker=resources.gpus,
                out_dir=out or settings.runs_dir / "tune",
                include_default=include_default,
                grace_period=grace_period,
            )
            if session is not None:
                log_to_mlflow(session, summary)
            _print_table(summary)
            test = summary.best_test_metrics
            shown = ", ".join(
                f"{k.removeprefix('test/')} {100 * v:.2f} %"
                for k, v in test.items()
                if k in {logged_key(name) for name in QUALITY_METRICS}
            )
            best = f"best trial {summary.best.trial_id}: test split (reported, not used to choose): {shown}"
            console.print(best, soft_wrap=True, highlight=False)
            default = summary.default
            if default is not None and default is not summary.best:
                gain = 100 * (summary.best.objective - default.objective)
                console.print(
                    f"the preset's own values score val {summary.objective} {100 * default.objective:.2f} %; "
                    f"the best trial {gain:+.2f} points",
                    soft_wrap=True,
                    highlight=False,
                )
            tuned = {PARAM_TARGETS[k] for k in summary.best.params}
            # Quoted for the shell: "[openvino]" is a glob pattern there.
            kept = " ".join(
                f"--set {shlex.quote(item)}" for item in set_ if item.partition("=")[0].strip() not in tuned
            )
            line = f"adkd train --category {cat} --model {model} --preset {preset} {kept} "
            line = " ".join((line + set_line(summary.best.params)).split())
            console.print(f"train it with: {line}", soft_wrap=True, highlight=False)
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if session is not None:
            result = session.finish(status=status)
            console.print(result.message)
            for cat, version in result.registered.items():
                name = session.children[cat].handle.registered_name or f"adkd-{cat}"
                console.print(f"registered {name} version {version}")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
