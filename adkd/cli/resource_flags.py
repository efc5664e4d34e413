"""What one training run asks the Ray cluster for, as flags named alike on every command that trains on Ray.

A run is one training: a category in `adkd train`, a row x category in `adkd benchmark`, a trial in `adkd tune`.
It trains on ``--workers-per-run`` workers (data-parallel), each with ``--cpus-per-worker`` CPUs and
``--gpus-per-worker`` GPUs. The names the commands had before (``--cpus-per-category``, ``--cpus-per-run``,
``--cpus-per-trial``…) still work for one release, hidden from --help, with a note on stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from adkd.errors import ConfigError

if TYPE_CHECKING:
    from adkd.platform.runs import RayPlan

WORKERS_PER_RUN = typer.Option(
    None,
    "--workers-per-run",
    show_default="1",
    help="Ray Train workers per run, data-parallel: each trains on 1/N of the images with batch_size images per "
    "step (batch_size is per worker: the effective batch is N x batch_size; the learning rate is not scaled) and "
    "gradients are averaged; worker 0 evaluates and writes the outputs.",
)
CPUS_PER_WORKER = typer.Option(None, "--cpus-per-worker", show_default="1", help="CPUs per worker (fractions allowed).")
GPUS_PER_WORKER = typer.Option(
    None,
    "--gpus-per-worker",
    show_default="1 when the cluster has GPUs, else 0",
    help="GPUs per worker (fractions up to 1 share a GPU between runs).",
)


def old_name(flag: str) -> typer.models.OptionInfo:
    """A flag's former name, kept hidden for one release."""
    return typer.Option(None, flag, hidden=True)


def pick(new: float | None, new_flag: str, old: dict[str, float | None]) -> float | None:
    """The value given under the flag's name or one former name (never both); None when neither was given.

    ``old`` maps each former name to what it received.
    """
    given = {flag: value for flag, value in old.items() if value is not None}
    if new is not None:
        given = {new_flag: new, **given}
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} name one setting: pass only {new_flag}")
    if not given:
        return None
    ((flag, value),) = given.items()
    if flag != new_flag:
        Console(stderr=True).print(f"{flag} is now {new_flag}; the old name goes in the next release", highlight=False)
    return value


def ray_plan(
    *,
    address: str | None = None,
    workers_per_run: int | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    max_failures: int | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
) -> RayPlan:
    """The one place a command turns its Ray flags into a ``RayPlan``; a flag not given keeps RayPlan's default."""
    from adkd.platform.runs import RayPlan

    given = {
        "address": address,
        "workers_per_run": workers_per_run,
        "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker,
        "max_failures": max_failures,
        "storage": storage,
        "num_cpus": num_cpus,
    }
    return RayPlan(**{name: value for name, value in given.items() if value is not None})
