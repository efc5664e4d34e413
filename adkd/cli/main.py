"""The ``adkd`` command line: parse, call platform/pipelines, print."""

from __future__ import annotations

import atexit
import gc
import sys
import traceback

import typer
from rich.console import Console
from rich.text import Text

from adkd.errors import AdkdError
from adkd.version import __version__

app = typer.Typer(
    name="adkd",
    help="Unsupervised industrial anomaly detection by knowledge distillation: "
    "train, evaluate, tune, register and serve one model per category.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"adkd {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Ray's and MLflow's own notices."),
) -> None:
    """adkd: knowledge-distillation anomaly detection, one model per category."""
    from adkd.platform.console.quiet import quiet_third_parties

    state["debug"] = debug
    quiet_third_parties(debug)


def _register_subcommands() -> None:
    # Imported here so `adkd --help` stays fast and each command module loads its own heavy deps.
    from adkd.cli import commands

    commands.register(app)


_register_subcommands()


def _spare_the_exit_collections() -> None:
    """Collect once, then freeze what is left: CPython's shutdown then skips it in its own garbage collections.

    Registered before the command runs, so it runs after the exit handlers of everything the command imported
    (MLflow's flush, Ray's shutdown, temporary folders). Those collections walk every object still alive, several
    times (`benchmarks/cli_exit.py`). The collection first still finalizes all garbage (an object with a finalizer
    in a reference cycle); what gets frozen is alive until the modules are cleared, and CPython does not promise
    to finalize those at exit.
    """
    gc.collect()
    gc.freeze()


def run() -> None:
    """Entry point that turns user errors into one line and exit code 2."""
    atexit.unregister(_spare_the_exit_collections)  # once per process, though run() may be called again in it
    atexit.register(_spare_the_exit_collections)
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except AdkdError as exc:
        if state["debug"]:
            traceback.print_exc()
        # The message is plain text: paths or rule ids in [brackets] must not be read as rich markup.
        err_console.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None)
        if code is None:
            code = getattr(exc, "code", 0)
        sys.exit(code or 0)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # usage errors (unknown option, missing value) arrive here in non-standalone mode
        if _is_usage_error(exc):
            exc.show()  # click's usage line and message, as standalone mode prints them
            sys.exit(exc.exit_code)
        raise


def _is_usage_error(exc: Exception) -> bool:
    """A click error with its own message. Recent typer releases carry their own copy of click (``typer._click``,
    seen in 0.29), whose exceptions are not click's classes; older releases raise click's own."""
    import click

    return isinstance(exc, click.exceptions.ClickException) or (
        isinstance(exc, typer.TyperException) and hasattr(exc, "show") and hasattr(exc, "exit_code")
    )


if __name__ == "__main__":
    run()
