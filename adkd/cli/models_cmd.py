"""`adkd models ...`: what the model registry holds."""

from __future__ import annotations

import typer
from rich.console import Console

from adkd.platform.console.tables import Column, print_table

models_app = typer.Typer(
    help="The model families adkd trains (the registry's versions: adkd registry list).", no_args_is_help=True
)


@models_app.command("list")
def list_models() -> None:
    """Print every model family adkd trains with its backbones and parameter counts."""
    from adkd.models.zoo import MODEL_ZOO, build_model, count_parameters

    columns = [
        Column("model", keep=True),
        Column("description", wrap=True, rank=5),
        Column("backbones", wrap=True, rank=3),
        Column("default", rank=4),
        Column("trainable", "right", rank=2),
        Column("frozen", "right", rank=1),
    ]
    rows = []
    for name, spec in MODEL_ZOO.items():
        trainable, frozen = count_parameters(build_model(name, weights="none"))
        rows.append(
            [name, spec.description, ", ".join(spec.backbones), spec.default_backbone, f"{trainable:,}", f"{frozen:,}"]
        )
    print_table(Console(), "adkd models", columns, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
