"""Every help text of the CLI reaches the user whole: typer renders it as rich markup, where "[station]" is a style
tag and vanishes ("adkd.toml ( bounds, )." was `adkd monitor --help`'s --config line)."""

from __future__ import annotations

import re

from typer.main import get_command
from typer.testing import CliRunner

from adkd.cli.main import app

TAG = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")  # what rich's markup parser takes for a tag


def _texts(command, path: str):
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    for sub in getattr(command, "commands", {}).values():
        yield from _texts(sub, f"{path} {sub.name}")


def test_no_help_text_holds_an_unescaped_markup_tag() -> None:
    found = [(where, m.group()) for where, text in _texts(get_command(app), "adkd") for m in TAG.finditer(text)]
    assert found == []


def test_the_settings_tables_show_in_help() -> None:
    out = CliRunner().invoke(app, ["monitor", "--help"], env={"COLUMNS": "200"}).output
    assert "adkd.toml ([monitor] bounds, [station])." in out
