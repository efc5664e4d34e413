"""The data gate's command-line options, the same on `adkd data validate` and `adkd train`."""

from __future__ import annotations

import typer

from adkd.pipelines.data.gate import GateOptions

ONE_SIZE = typer.Option(
    False, "--one-size", help="Refuse categories whose images vary in size (default: accept and report them)."
)
ALLOW_MIXED_MODES = typer.Option(
    False,
    "--allow-mixed-modes",
    help="Accept grayscale (L) and colour (RGB) images in one category; RGB files with three equal channels "
    "count as L and pass without it.",
)
MIN_TRAIN = typer.Option(1, "--min-train", min=1, help="Fewest images train/good may hold.")
IMAGE_LEVEL = typer.Option(
    False,
    "--image-level",
    help="Ignore ground_truth/: image labels only, so defective images need no mask (a category without "
    "ground_truth/ is image-level anyway).",
)


def gate_options(one_size: bool, allow_mixed_modes: bool, min_train: int, image_level: bool) -> GateOptions:
    return GateOptions(
        one_size=one_size, allow_mixed_modes=allow_mixed_modes, min_train=min_train, image_level=image_level
    )


def overrides_from(kwargs: dict) -> list[str]:
    """``data_gate.*`` overrides from a command's keyword arguments (absent flags keep the defaults)."""
    options = gate_options(
        bool(kwargs.get("one_size")),
        bool(kwargs.get("allow_mixed_modes")),
        int(kwargs.get("min_train") or 1),
        bool(kwargs.get("image_level")),
    )
    return options.overrides()
