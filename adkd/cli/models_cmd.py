"""`adkd models ...`: what the model registry holds."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="List the registered models.", no_args_is_help=True)


@models_app.command("list")
def list_models() -> None:
    """Print every registered model with its backbones and parameter counts."""
    from adkd.models.registry import MODEL_REGISTRY, build_model, count_parameters

    table = Table(title="adkd models")
    for col in ("model", "description", "backbones", "default", "trainable", "frozen"):
        table.add_column(col, justify="right" if col in ("trainable", "frozen") else "left")
    for name, spec in MODEL_REGISTRY.items():
        model = build_model(name, weights="none")
        trainable, frozen = count_parameters(model)
        table.add_row(
            name,
            spec.description,
            ", ".join(spec.backbones),
            spec.default_backbone,
            f"{trainable:,}",
            f"{frozen:,}",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
