"""`adkd cluster status`: what a Ray cluster (or the embedded local Ray) offers to `train --all-categories`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from adkd.cli import resource_flags

console = Console(markup=False)  # names, paths and --set lines are text: "[openvino]" is not a style tag
cluster_app = typer.Typer(help="Inspect the Ray cluster adkd trains on.", no_args_is_help=True)


@cluster_app.command("status")
def status(
    address: str | None = typer.Option(None, "--address", help="Ray address (default RAY_ADDRESS; none = local)."),
    workers_per_run: int | None = resource_flags.WORKERS_PER_RUN,
    cpus_per_worker: float | None = resource_flags.CPUS_PER_WORKER,
    gpus_per_worker: float | None = resource_flags.GPUS_PER_WORKER,
    cpus_per_category: float | None = resource_flags.old_name("--cpus-per-category"),
    gpus_per_category: float | None = resource_flags.old_name("--gpus-per-category"),
) -> None:
    """Nodes and resources, and how many runs (categories) can train at once with the given request per run."""
    import ray

    from adkd.platform.cluster.connection import connect, shutdown
    from adkd.platform.cluster.resources import resources_for
    from adkd.settings import load_settings

    plan = resource_flags.ray_plan(
        address=address or load_settings().ray_address,
        workers_per_run=workers_per_run,
        cpus_per_worker=resource_flags.pick(
            cpus_per_worker, "--cpus-per-worker", {"--cpus-per-category": cpus_per_category}
        ),
        gpus_per_worker=resource_flags.pick(
            gpus_per_worker, "--gpus-per-worker", {"--gpus-per-category": gpus_per_category}
        ),
    )
    address = plan.address
    total = connect(address)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    finally:
        shutdown()
    table = Table(title=f"Ray cluster: {address or 'embedded local Ray'}")
    for col in ("node", "CPU", "GPU", "memory GiB"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for node in nodes:
        res = node.get("Resources", {})
        table.add_row(
            node.get("NodeManagerAddress", "?"),
            f"{res.get('CPU', 0):g}",
            f"{res.get('GPU', 0):g}",
            f"{res.get('memory', 0) / 2**30:.1f}",
        )
    console.print(table)
    request = resources_for(plan, total)  # what train would ask for
    limits = [total.get("CPU", 0) / (request.cpus * request.workers)]
    if request.gpus > 0:
        limits.append(total.get("GPU", 0) / (request.gpus * request.workers))
    console.print(f"categories that can train at once: {int(min(limits) + 1e-9)}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
