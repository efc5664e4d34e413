"""`adkd export --checkpoint PATH`: the trained model as ONNX, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console(markup=False)  # paths and gate sources are text; the two "refused" lines ask for markup


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
    int8_runtime: list[str] = typer.Option(
        ["onnxruntime", "openvino"],
        "--int8-runtime",
        help="With --int8: the runtimes that get an int8 model (onnxruntime: <name>.int8.onnx; openvino: NNCF's "
        "<name>.ov.int8.onnx). Repeat the option for both (the default).",
    ),
    time_runtimes: bool | None = typer.Option(
        None,
        "--time-runtimes/--no-time-runtimes",
        help="Measure the fp32 file in OpenVINO (own thresholds, gate, test metrics), time every gated runtime "
        "variant here and record the fastest for runtime=auto (default: with --int8).",
    ),
) -> None:
    """Export to ONNX (uint8 RGB NHWC in; anomaly_map, image_score, normalized_score out), checked with onnxruntime."""
    from adkd.errors import ConfigError

    # The flags and the checkpoint's path first: before any file is written, and before the training stack's
    # imports (torch, ONNX Runtime: 4-5 CPU-s), so a mistyped command answers at once.
    if int8_scheme is not None:
        if not int8:
            raise ConfigError("--int8-scheme chooses the int8 model's layout: add --int8")
        from adkd.pipelines.export.schemes import check_scheme

        check_scheme(int8_scheme)
    bad = [r for r in int8_runtime if r not in ("onnxruntime", "openvino")]
    if bad:
        raise ConfigError(f"--int8-runtime {bad[0]!r} is not onnxruntime or openvino")
    if not int8 and sorted(set(int8_runtime)) != ["onnxruntime", "openvino"]:
        raise ConfigError("--int8-runtime chooses the runtimes that get an int8 model: add --int8")
    if not checkpoint.is_file():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist; pass a model.pt written by `adkd train`")

    from adkd.pipelines.export.graph_metadata import read_metadata
    from adkd.pipelines.train.artifacts import export_checkpoint

    path = export_checkpoint(checkpoint, out)
    meta = read_metadata(path)
    parity = meta.get("parity", {})
    size = meta["image_size"]  # with markup, rich took "[batch, ...]" for a style tag and printed nothing of it
    console.print(f"wrote {path}  (opset 17, input uint8 [batch, {size}, {size}, 3])", highlight=False)
    if parity:
        console.print(
            f"onnxruntime vs PyTorch on {parity['n_images']} {parity['source']}: max map diff "
            f"{parity['max_map_diff']:.2e} (map range {parity['map_range']:.3g}), max score diff "
            f"{parity['max_score_diff']:.2e}",
            highlight=False,
        )
    refusals = []
    if int8 and "onnxruntime" in int8_runtime:
        refusals += _int8(checkpoint, path, int8_scheme, last=int8_runtime == ["onnxruntime"])
    if int8 and "openvino" in int8_runtime:
        refusals += _openvino_int8(checkpoint, path)
    if int8 if time_runtimes is None else time_runtimes:
        _time_runtimes(checkpoint, path)
    if refusals and len(refusals) == len(set(int8_runtime)):  # every int8 model asked for was refused
        from adkd.pipelines.export.quantize import QuantizationRefused

        raise QuantizationRefused(refusals[0])


def _int8(checkpoint: Path, fp32: Path, scheme: str | None, last: bool = True) -> list[str]:
    from adkd.pipelines.export.quantize import QuantizationRefused
    from adkd.pipelines.train.artifacts import export_int8_checkpoint

    try:
        result = export_int8_checkpoint(checkpoint, fp32, scheme=scheme)
    except QuantizationRefused as exc:
        if last:
            raise  # exit 2 with the gate's reasons
        console.print(f"[yellow]refused[/] {escape(str(exc))}", highlight=False, markup=True)
        return [str(exc)]
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
    return []


def _openvino_int8(checkpoint: Path, fp32: Path) -> list[str]:
    from adkd.pipelines.train.runtime_variants import PREFIX, export_openvino_int8_checkpoint

    outcome = export_openvino_int8_checkpoint(checkpoint, fp32)
    if outcome.path is None:
        reason = outcome.tags.get(f"{PREFIX}_refused", "OpenVINO int8 model refused")
        console.print(f"[yellow]refused[/] {escape(reason)}", highlight=False, markup=True)
        return [reason]
    g = outcome.gate
    console.print(
        f"wrote {outcome.path}  (int8 NNCF for OpenVINO; gated on {g.n_normals} held-out {g.source}: "
        f"false positives {g.int8_false_positives} int8 / {g.fp32_false_positives} fp32, score r "
        f"{g.score_correlation:.4f}, map r {g.map_correlation:.4f})",
        highlight=False,
    )
    if outcome.test_metrics:
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in outcome.test_metrics.items())
        console.print(f"test split, int8 (OpenVINO): {shown}", highlight=False)
    return []


def _time_runtimes(checkpoint: Path, fp32: Path) -> None:
    from adkd.pipelines.train.runtime_variants import choose_runtime_checkpoint, describe_choice

    record, floats = choose_runtime_checkpoint(checkpoint, fp32)
    for variant, g in floats.gates.items():
        verdict = "passed" if g.ok else "refused: " + "; ".join(g.problems())
        console.print(
            f"measured {fp32.name} on {variant} (own thresholds; gated on {g.n_normals} held-out {g.source}: "
            f"score r {g.score_correlation:.4f}, map r {g.map_correlation:.4f}) {verdict}",
            highlight=False,
        )
        if own := floats.test_metrics.get(variant):
            shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in own.items())
            console.print(f"test split, {variant}: {shown}", highlight=False)
    for note in floats.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(describe_choice(record), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
