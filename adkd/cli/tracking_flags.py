"""The MLflow naming options train, tune and benchmark share: which experiment, and the command's run name."""

from __future__ import annotations

import typer

EXPERIMENT_NAME = typer.Option(
    None,
    "--experiment-name",
    help="MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, ADKD_EXPERIMENT, adkd.toml, else the data set's name).",
)
RUN_NAME = typer.Option(None, "--run-name", help="Name of the command's MLflow run (default: <command>-<time>).")
