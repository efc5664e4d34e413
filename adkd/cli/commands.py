"""Which sub-commands the ``adkd`` app has: every ``adkd/cli/*_cmd.py`` module's ``register(app)``."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import adkd.cli


def register(app: typer.Typer) -> None:
    names = sorted(m.name for m in pkgutil.iter_modules(adkd.cli.__path__) if m.name.endswith("_cmd"))
    for name in names:
        importlib.import_module(f"adkd.cli.{name}").register(app)
