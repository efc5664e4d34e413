"""The names of the evaluation metrics, defined once: every table, tracker and gate uses these."""

from __future__ import annotations

METRIC_NAMES = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
QUALITY_METRICS = METRIC_NAMES[:3]  # the papers' three figures: what benchmarks and promotion compare
METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "f1_max": "F1-max",
}
TEST_PREFIX = "test/"  # a run's test-split metrics are logged as test/<name>


def logged_key(name: str) -> str:
    """The logged key of a test-split metric, e.g. ``test/image_auroc``."""
    return f"{TEST_PREFIX}{name}"
