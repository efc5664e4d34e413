"""`adkd cluster status`: what a Ray cluster (or the embedded local Ray) offers to `train --all-categories`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()
cluster_app = typer.Typer(help="Inspect the Ray cluster adkd trains on.", no_args_is_help=True)


@cluster_app.command("status")
def status(
    address: str | None = typer.Option(None, "--address", help="Ray address (default RAY_ADDRESS; none = local)."),
    cpus_per_category: float = typer.Option(1.0, "--cpus-per-category", help="To estimate concurrent categories."),
    gpus_per_category: float = typer.Option(0.0, "--gpus-per-category", help="To estimate concurrent categories."),
) -> None:
    """Nodes and resources, and how many categories can train at once with the given per-category request."""
    import ray

    from adkd.platform.cluster.connection import connect, shutdown
    from adkd.settings import load_settings

    address = address or load_settings().ray_address
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
    limits = [total.get("CPU", 0) / cpus_per_category if cpus_per_category > 0 else float("inf")]
    if gpus_per_category > 0:
        limits.append(total.get("GPU", 0) / gpus_per_category)
    console.print(f"categories that can train at once: {int(min(limits) + 1e-9)}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
