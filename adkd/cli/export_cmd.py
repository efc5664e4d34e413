"""`adkd export --checkpoint PATH`: the trained model as ONNX, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by `adkd train`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="ONNX file to write (default: beside the checkpoint)."),
    int8: bool = typer.Option(
        False, "--int8", help="Also write <name>.int8.onnx: static int8, calibrated and gated on validation images."
    ),
    int8_scheme: str | None = typer.Option(
        None,
        "--int8-scheme",
        help="qdq-s8s8, qdq-u8s8 or qop-u8s8 (default: the run's int8_scheme setting).",
    ),
) -> None:
    """Export to ONNX (uint8 RGB NHWC in; anomaly_map, image_score, normalized_score out), checked with onnxruntime."""
    from adkd.errors import ConfigError
    from adkd.pipelines.export import read_metadata
    from adkd.pipelines.train.artifacts import export_checkpoint

    if int8_scheme is not None:  # before any file is written
        if not int8:
            raise ConfigError("--int8-scheme chooses the int8 model's layout: add --int8")
        from adkd.pipelines.export.quantize import check_scheme

        check_scheme(int8_scheme)

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
    if int8:
        _int8(checkpoint, path, int8_scheme)


def _int8(checkpoint: Path, fp32: Path, scheme: str | None) -> None:
    from adkd.pipelines.train.artifacts import export_int8_checkpoint

    # QuantizationRefused: exit 2 with the gate's reasons
    result = export_int8_checkpoint(checkpoint, fp32, scheme=scheme)
    g = result.gate
    console.print(
        f"wrote {result.path}  (int8 {result.scheme}; calibrated on {g.n_calibration}, gated on {g.n_normals} "
        f"held-out {g.source}: false positives {g.int8_false_positives} int8 / {g.fp32_false_positives} fp32, "
        f"score r {g.score_correlation:.4f}, map r {g.map_correlation:.4f}, synthetic-defect image AUROC "
        f"{g.fp32_image_auroc:.4f} fp32 / {g.int8_image_auroc:.4f} int8)",
        highlight=False,
    )
    for name, metrics in result.test_metrics.items():
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items())
        console.print(f"test split, {name}: {shown}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
