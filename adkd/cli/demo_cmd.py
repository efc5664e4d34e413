"""`adkd demo` (what `make demo` runs): a synthetic data set, then `train --all-categories` on local Ray."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console

console = Console()

# Two textures and one object: three categories fit the 15-minute budget on a 2-core machine.
DEMO_CATEGORIES = ("weave", "dots", "disc")


def _missing(root: Path, categories: list[str]) -> list[str]:
    return [c for c in categories if not (root / c / "train" / "good").is_dir()]


def demo(
    data: Path = typer.Option(Path("demo-data"), "--data", help="Where the synthetic data set is (or is written)."),
    categories: str = typer.Option(",".join(DEMO_CATEGORIES), "--categories", help="Synthetic categories to train."),
    model: str = typer.Option("rd", "--model", "-m", help="rd, mrkd, stfpm or stfpm-ae."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a cpu-smoke setting: key=value."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
) -> None:
    """Synthesise a data set, train every category at once on the embedded local Ray, show the results."""
    from adkd.cli.train_all import run_all
    from adkd.pipelines.data.synth import synthesize

    started = time.monotonic()
    names = [c.strip() for c in categories.split(",") if c.strip()]
    missing = _missing(data, names)
    if missing:
        console.print(f"[bold]1/2[/] synthesising {', '.join(missing)} into {data} ...")
        synthesize(data, categories=missing)
    else:
        console.print(f"[bold]1/2[/] using the data set in {data}")
    cpus = num_cpus or os.cpu_count() or 1
    # Every category runs at once: split the machine between them (Ray accepts fractional CPUs).
    per_category = max(round(cpus / max(len(names), 1), 2), 0.25)
    console.print(
        f"[bold]2/2[/] adkd train --categories {','.join(names)} --model {model} --preset cpu-smoke "
        f"on a local Ray with {cpus} CPUs ({per_category:g} per category)"
    )
    outcome = run_all(
        data=str(data),
        model=model,
        preset="cpu-smoke",
        overrides=list(set_),
        config_file=None,
        out=None,
        skip_validation=False,
        categories=",".join(names),
        cpus_per_category=per_category,
        gpus_per_category=0.0,
        num_cpus=cpus,
    )
    minutes = (time.monotonic() - started) / 60
    console.print(f"demo finished in {minutes:.1f} min.")
    console.print("Browse the runs and the registered models with:  [bold]adkd ui[/]  (then open the URL it prints)")
    if outcome.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
