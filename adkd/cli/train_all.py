"""`adkd train --all-categories | --categories a,b`: the multi-category path of `adkd train`, on Ray.

``with_all_categories(train)`` returns the `adkd train` command with the Ray options added: when
``--all-categories`` or ``--categories`` is given it trains every category at once through
``adkd.platform.ray_driver.run_all_categories``; otherwise it calls the single-category ``train``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from adkd.errors import ConfigError

console = Console()

# The options `adkd train` gains; names are the keyword arguments of the wrapped command.
ALL_CATEGORY_OPTIONS: dict[str, Any] = {
    "all_categories": typer.Option(
        False, "--all-categories", help="Train every category under --data at once on Ray (one model each)."
    ),
    "categories": typer.Option(
        None, "--categories", help="Comma-separated categories to train at once on Ray, e.g. bottle,cable."
    ),
    "address": typer.Option(
        None, "--address", help="Ray cluster address (default RAY_ADDRESS; none = an embedded local Ray)."
    ),
    "workers_per_category": typer.Option(
        1,
        "--workers-per-category",
        help="Ray Train workers per category, data-parallel: each trains on 1/N of the images with batch_size "
        "images per step (batch_size is per worker: the effective batch is N x batch_size; the learning rate "
        "is not scaled) and gradients are averaged; worker 0 evaluates and writes the outputs.",
    ),
    "cpus_per_category": typer.Option(1.0, "--cpus-per-category", help="CPUs per worker (fractions allowed)."),
    "gpus_per_category": typer.Option(
        None, "--gpus-per-category", help="GPUs per worker, fractions allowed (default 1 when the cluster has GPUs)."
    ),
    "max_failures": typer.Option(2, "--max-failures", help="Restarts of a category after a crash (from checkpoint)."),
    "storage": typer.Option(
        None, "--storage", help="Run storage for checkpoints: a path all nodes see or s3://bucket/prefix."
    ),
    "num_cpus": typer.Option(None, "--num-cpus", help="CPUs of the embedded local Ray (default: this machine's)."),
    "no_tracking": typer.Option(False, "--no-tracking", help="Do not write MLflow runs or register models."),
}

OPTION_TYPES: dict[str, Any] = {
    "all_categories": bool,
    "categories": str | None,
    "address": str | None,
    "workers_per_category": int,
    "cpus_per_category": float,
    "gpus_per_category": float | None,
    "max_failures": int,
    "storage": str | None,
    "num_cpus": int | None,
    "no_tracking": bool,
}


def _s3_categories(data: str, endpoint_url: str | None) -> list[str]:
    """Top-level folders under an s3:// data root (listing only: nothing is downloaded here)."""
    from adkd.platform.s3 import S3Uri, s3_client

    uri = S3Uri.parse(data)
    client = s3_client(endpoint_url)
    prefix = f"{uri.prefix}/" if uri.prefix else ""
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=prefix, Delimiter="/"):
        names.extend(p["Prefix"][len(prefix) :].strip("/") for p in page.get("CommonPrefixes", []))
    if not names:
        raise ConfigError(f"no category folders under {data}; check the URI or pass --categories")
    return sorted(names)


def resolve_categories(data: str, categories: str | None, all_categories: bool, endpoint_url: str | None) -> list[str]:
    """The categories to train: the given list (checked when the data is local) or every one under --data."""
    wanted = [c.strip() for c in (categories or "").split(",") if c.strip()]
    if categories is not None and not wanted:
        raise ConfigError("--categories is empty; write e.g. --categories bottle,cable")
    if data.startswith("s3://"):
        return wanted or _s3_categories(data, endpoint_url)
    from adkd.pipelines.data.mvtec import resolve_categories as resolve_local

    return resolve_local(data, wanted or None)


def run_all(
    *,
    data: str,
    model: str,
    preset: str | None,
    overrides: list[str],
    config_file: Path | None,
    out: Path | None,
    skip_validation: bool,
    all_categories: bool = False,
    categories: str | None = None,
    address: str | None = None,
    workers_per_category: int = 1,
    cpus_per_category: float = 1.0,
    gpus_per_category: float | None = None,
    max_failures: int = 2,
    storage: str | None = None,
    num_cpus: int | None = None,
    no_tracking: bool = False,
    resume: bool = False,
    live: bool = True,
) -> Any:
    """Resolve one config per category, run them all on Ray, print and return the results."""
    from adkd.cli.live_board import LiveBoard
    from adkd.cli.train_cmd import resolve_cli_config
    from adkd.platform.ray_driver import RayRunOptions, run_all_categories
    from adkd.platform.ray_resources import CategoryResources
    from adkd.platform.results_files import results_cells
    from adkd.platform.run_listeners import RunListener, TrackingListener
    from adkd.platform.tables import print_table
    from adkd.settings import load_settings

    if resume:
        raise ConfigError(
            "--resume is for one category; --all-categories resumes crashed workers by itself (--max-failures)"
        )
    settings_file = config_file if config_file is not None and config_file.suffix == ".toml" else None
    settings = load_settings(settings_file, ray_address=address)
    names = resolve_categories(data, categories, all_categories, settings.s3_endpoint_url)
    configs = [
        resolve_cli_config(model, preset, name, data, overrides, config_file, out, skip_validation) for name in names
    ]
    address = settings.ray_address
    if gpus_per_category is None:
        gpus_per_category = _default_gpus(address)
    resources = CategoryResources(workers=workers_per_category, cpus=cpus_per_category, gpus=gpus_per_category)
    sink: TrackingListener | None = None
    if not no_tracking:
        from adkd.platform.tracking import TrackingSession

        session = TrackingSession.from_settings(
            settings,
            data,
            command="train",
            params={"categories": ",".join(names), "model": model, "preset": preset or ""},
            tags={"categories": ",".join(names), "mode": "all-categories"},
        )
        sink = TrackingListener(session)
    options = RayRunOptions(
        resources=resources,
        address=address,
        num_cpus=num_cpus,
        runs_dir=settings.runs_dir,
        storage_path=storage,
        max_failures=max_failures,
        s3_endpoint_url=settings.s3_endpoint_url,
    )
    with LiveBoard(console) as board:
        listeners: list[RunListener] = [board] if live else []
        if sink is not None:
            listeners.append(sink)
        outcome = run_all_categories(configs, options, listeners)
    from adkd.pipelines.data.protocol import read_reference

    reference = read_reference(data)  # e.g. the paper's mean for `adkd data download cifar10`
    title, more = f"{model} on {len(names)} categories", "the results files below hold every column"
    print_table(console, title, *results_cells(outcome.rows, reference), more=more)
    if reference and outcome.markdown_path is not None:
        from adkd.platform.results_files import results_markdown

        Path(outcome.markdown_path).write_text(results_markdown(outcome.rows, reference))
    for row in outcome.rows:
        if row.error:
            console.print(f"[red]{row.category} failed:[/] {row.error}", highlight=False)
    console.print(f"results: {outcome.markdown_path} and {outcome.json_path}  ({outcome.wall_s / 60:.1f} min)")
    if sink is not None and getattr(sink, "summary", None) is not None:
        console.print(sink.summary.message)
    return outcome


def _default_gpus(address: str | None) -> float:
    """One GPU per category where this machine has GPUs; on a cluster the cluster decides (asked later)."""
    if address:
        return 0.0 if not _cluster_has_gpus(address) else 1.0
    try:
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:
        return 0.0


def _cluster_has_gpus(address: str) -> bool:
    from adkd.platform.ray_connection import connect

    return connect(address).get("GPU", 0.0) > 0


def with_all_categories(train: Callable[..., Any]) -> Callable[..., Any]:
    """`train` plus the Ray options; --all-categories/--categories switch to the multi-category path."""
    base = inspect.signature(train)
    params = []
    for p in base.parameters.values():
        if p.name == "category":
            # Optional now: --all-categories/--categories name the categories instead.
            info = p.default
            p = p.replace(default=typer.Option(None, *info.param_decls, help=info.help))
        params.append(p)
    params.extend(
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=OPTION_TYPES[name])
        for name, option in ALL_CATEGORY_OPTIONS.items()
    )

    @functools.wraps(train)
    def command(**kwargs: Any) -> None:
        extra = {name: kwargs.pop(name) for name in ALL_CATEGORY_OPTIONS}
        if extra["all_categories"] or extra["categories"] is not None:
            from adkd.cli.gate_flags import overrides_from

            if kwargs.get("category"):
                raise ConfigError("pass either --category or --all-categories/--categories, not both")
            outcome = run_all(
                data=kwargs["data"],
                model=kwargs["model"],
                preset=kwargs.get("preset"),
                overrides=list(kwargs.get("set_") or []) + overrides_from(kwargs),
                config_file=kwargs.get("config_file"),
                out=kwargs.get("out"),
                skip_validation=bool(kwargs.get("skip_validation")),
                resume=bool(kwargs.get("resume")),
                **extra,
            )
            if outcome.failed:
                raise typer.Exit(1)
            return
        if not kwargs.get("category"):
            raise ConfigError("missing --category: name one category, or train them all with --all-categories")
        train(**kwargs)

    command.__signature__ = base.replace(parameters=params)  # type: ignore[attr-defined]
    command.__doc__ = (train.__doc__ or "").strip() + " With --all-categories: every category at once on Ray."
    return command
