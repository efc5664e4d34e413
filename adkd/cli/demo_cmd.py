"""`adkd demo` (what `make demo` runs): a synthetic data set, then `train --all-categories` on local Ray."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()

# Two textures: stfpm cpu-smoke detects them well with a random teacher too (image AUROC 98.1 / 100 measured
# on weave / grain; dots 88.9, 100 with the ImageNet teacher); synthetic objects need a real teacher (disc: 62.1
# random, 81.1 ImageNet). Two categories show the parallel run and give each of a 2-core laptop's cores one;
# the Quick tour then adds disc beside them (`adkd data synth demo-data --categories weave,disc`).
DEMO_CATEGORIES = ("weave", "grain")
DEMO_BACKBONE = "mobilenet_v2"  # the cpu-smoke teacher; torchvision's ImageNet file is 14 MB


def _missing(root: Path, categories: list[str]) -> list[str]:
    return [c for c in categories if not (root / c / "train" / "good").is_dir()]


def _teacher_weights(weights: str) -> str:
    """``auto``: torchvision's ImageNet MobileNetV2 (cache or download), else a random teacher, said in one line."""
    if weights != "auto":
        return weights
    from adkd.errors import WeightsError
    from adkd.models.backbones import ensure_imagenet_weights

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an unreachable download host must not hold the demo
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torch.hub prints "Downloading: ..." on stdout
            ensure_imagenet_weights(DEMO_BACKBONE)
    except WeightsError:
        console.print(
            "no ImageNet MobileNetV2 weights here (not cached, no download): the demo uses a random teacher, "
            "so expect lower scores; --weights PATH takes a state-dict file",
            highlight=False,
        )
        return "none"
    finally:
        socket.setdefaulttimeout(previous)
    return "imagenet"


def demo(
    data: Path = typer.Option(Path("demo-data"), "--data", help="Where the synthetic data set is (or is written)."),
    categories: str = typer.Option(",".join(DEMO_CATEGORIES), "--categories", help="Synthetic categories to train."),
    model: str = typer.Option("stfpm", "--model", "-m", help="rd, mrkd, stfpm or stfpm-ae."),
    weights: str = typer.Option(
        "auto", "--weights", help="Teacher: auto (ImageNet when it can be had, else random), imagenet, none or a path."
    ),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a cpu-smoke setting: key=value."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
) -> None:
    """Synthesise a data set, train every category at once on the embedded local Ray, show the results."""
    from adkd.cli.live_board import LiveBoard
    from adkd.cli.resource_flags import ray_plan
    from adkd.cli.run_output import print_many
    from adkd.pipelines.data.synthetic_dataset import synthesize
    from adkd.platform.runs import RunRequest, train_many

    started = time.monotonic()
    names = [c.strip() for c in categories.split(",") if c.strip()]
    missing = _missing(data, names)
    if missing:
        console.print(f"[bold]1/2[/] synthesising {escape(', '.join(missing))} into {escape(str(data))} ...")
        synthesize(data, categories=missing)
    else:
        console.print(f"[bold]1/2[/] using the data set in {escape(str(data))}")
    teacher = _teacher_weights(weights)
    cpus = num_cpus or os.cpu_count() or 1
    # Every category runs at once: split the machine between them (Ray accepts fractional CPUs).
    per_category = max(round(cpus / max(len(names), 1), 2), 0.25)
    console.print(
        f"[bold]2/2[/] adkd train --categories {','.join(names)} --model {model} --preset cpu-smoke "
        f"--set weights={teacher} on a local Ray with {cpus} CPUs ({per_category:g} per category)",
        highlight=False,
    )
    request = RunRequest(
        model=model, data=str(data), categories=names, preset="cpu-smoke", overrides=[f"weights={teacher}", *set_]
    )
    plan = ray_plan(cpus_per_worker=per_category, gpus_per_worker=0.0, num_cpus=cpus)
    with LiveBoard(console) as board:
        many = train_many(request, plan=plan, listeners=[board])
    print_many(console, many, model, str(data))
    outcome = many.outcome
    minutes = (time.monotonic() - started) / 60
    console.print(f"demo finished in {minutes:.1f} min. Where to look:", highlight=False)
    console.print("  adkd ui                      the runs, metrics and registered models in MLflow's UI")
    run_dir = os.path.relpath(outcome.run_dir)
    console.print(f"  {run_dir}/<category>/overlay_*.png   anomaly maps over test images", highlight=False)
    console.print(f"  {os.path.relpath(outcome.markdown_path)}   this table", highlight=False)
    if outcome.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
