"""The numbers a runtime variant of the fp32 file was measured at, kept in that file's own metadata.

OpenVINO runs the fp32 file itself, with the f32 or the bf16 precision hint (``openvino``, ``openvino-bf16``): no
second copy of the weights. What differs is the numbers: bf16 moves image scores by a percent or two, so thresholds
fitted on ONNX Runtime's scores are not that variant's. ``adkd export`` (``adkd.pipelines.export.float_variants``)
measures each such variant on its own and writes a record per variant under ``variant_records`` in the fp32
file's metadata:

- ``thresholds``: fitted on the variant's own scores of the held-out normals the fp32 thresholds came from;
- ``normal_scores``: those scores (``adkd monitor`` compares production with them);
- ``thresholds_fitted_on``: which images, at which quantile, scored by what;
- ``gate``: the variant against ONNX Runtime fp32 on the gate images (``int8_gate``'s figures and bounds, under
  its field names: ``int8_...`` is the variant's side);
- ``precision_hint``: what OpenVINO was told (``f32``, ``bf16``);
- ``metrics``: its own test-split metrics (``test/...``), when the run had a test split.

A predictor of that variant reads its numbers from the record (``with_variant_numbers``): its metadata, verdicts
and normalised scores are those the variant was measured at. ``runtime=auto`` may pick a variant whose record
passed its gate and carries its own metrics, as it may an int8 file.
"""

from __future__ import annotations

from typing import Any

RECORDS_KEY = "variant_records"
FLOAT_VARIANTS = ("openvino", "openvino-bf16")  # the variants that run the fp32 file on another runtime
# The record's entries that stand in for the fp32 file's own metadata in a predictor of the variant.
OWN_NUMBERS = ("thresholds", "normal_scores", "thresholds_fitted_on", "metrics")


def variant_record(meta: dict[str, Any], variant: str) -> dict[str, Any] | None:
    """The record of ``variant`` in an fp32 file's metadata (None: not measured)."""
    records = meta.get(RECORDS_KEY)
    record = records.get(variant) if isinstance(records, dict) else None
    return record if isinstance(record, dict) and isinstance(record.get("thresholds"), dict) else None


def with_variant_numbers(meta: dict[str, Any], variant: str) -> tuple[dict[str, Any], bool]:
    """(``meta`` with ``variant``'s own thresholds, normal scores and metrics in place of the fp32 file's, whether it
    had a record); ``meta`` unchanged without one."""
    record = variant_record(meta, variant)
    if record is None:
        return meta, False
    out = {**meta, "metrics": {}}  # no metrics of its own: none of the fp32 file's stand in for them
    out.update({key: record[key] for key in OWN_NUMBERS if key in record})
    out["variant_gate"] = record.get("gate") or {}
    return out, True


def eligibility(meta: dict[str, Any], variant: str) -> dict[str, Any]:
    """Whether ``runtime=auto`` may run ``variant`` of the fp32 file with metadata ``meta``: ``{"gate_ok": ...,
    "own_metrics": ...}``, or ``{"skipped": why}`` when it was never measured."""
    record = variant_record(meta, variant)
    if record is None:
        return {"skipped": "not measured at export: no thresholds or metrics of its own"}
    return {"gate_ok": bool((record.get("gate") or {}).get("ok")), "own_metrics": bool(record.get("metrics"))}
