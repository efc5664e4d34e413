"""`adkd export --checkpoint PATH`: the trained model as ONNX, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by `adkd train`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="ONNX file to write (default: beside the checkpoint)."),
) -> None:
    """Export to ONNX (uint8 RGB NHWC in; anomaly_map, image_score, normalized_score out), checked with onnxruntime."""
    from adkd.pipelines.export import export_checkpoint, read_metadata

    path = export_checkpoint(checkpoint, out)
    meta = read_metadata(path)
    parity = meta.get("parity", {})
    console.print(f"wrote {path}  (opset 17, input uint8 [batch, {meta['image_size']}, {meta['image_size']}, 3])")
    if parity:
        console.print(
            f"onnxruntime vs PyTorch on {parity['n_images']} {parity['source']}: max map diff "
            f"{parity['max_map_diff']:.2e} (map range {parity['map_range']:.3g}), max score diff "
            f"{parity['max_score_diff']:.2e}",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
