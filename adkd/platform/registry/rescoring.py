"""Fair comparisons between registered versions: numbers measured on the same data, or measured again.

Every version records the data it was evaluated on (``data_fingerprint``, ``data``, ``dataset`` tags; older
versions: their run's tags). Versions evaluated on the same data compare on their stored metrics. Otherwise
(or when the user names ``--data``) each version's registered ONNX file is scored again on one data root,
the candidate's evaluation data unless told otherwise, through ``adkd.pipelines.evaluate.artifact_metrics``
(the predictor ``adkd predict`` uses, on ONNX Runtime as the stored numbers were), and those numbers decide.
When that cannot be done (the data is gone, changed, or unknown) the comparison is refused in one line; the
caller decides whether ``--force`` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import AdkdError, first_line

FINGERPRINT_TAG = "data_fingerprint"
DATA_TAG = "data"
DATASET_TAG = "dataset"


class ComparisonUnavailable(AdkdError):
    """Versions evaluated on different data cannot be scored again on one data root."""


@dataclass(frozen=True)
class EvaluationData:
    """What one version was evaluated on, as recorded ('' where nothing was recorded)."""

    fingerprint: str
    data: str
    dataset: str
    category: str

    @property
    def short(self) -> str:
        return self.fingerprint[:12] if self.fingerprint else "unknown"


@dataclass
class RescoreContext:
    """What re-scoring needs besides the registry: where models and data are fetched from, and ``--data``."""

    tracking_uri: str
    cache_dir: Path
    s3_endpoint_url: str | None = None
    data: str | None = None  # --data: score on this root whatever the versions were evaluated on


@dataclass
class Comparison:
    """The numbers a gate compares, per version: stored ones, or re-scored ones on ``data``."""

    name: str
    evaluated_on: dict[str, EvaluationData]
    stored: dict[str, dict[str, float]]
    rescored: dict[str, dict[str, float]] = field(default_factory=dict)
    data: str = ""  # the root the re-scored numbers come from
    fingerprint: str = ""
    reason: str = ""  # why these numbers: same data, different data, --data

    @property
    def was_rescored(self) -> bool:
        return bool(self.rescored)

    def metrics(self, version: str) -> dict[str, float]:
        """The numbers that decide for ``version``."""
        return self.rescored[version] if self.was_rescored else self.stored[version]

    def record(self) -> dict[str, Any]:
        """What the audit trail keeps of it."""
        out: dict[str, Any] = {"compared_on": "re-scored" if self.was_rescored else "stored"}
        if self.was_rescored:
            out |= {"data": self.data, "data_fingerprint": self.fingerprint, "rescored": self.rescored}
        return out


def evaluation_data(client: Any, mv: Any) -> EvaluationData:
    """The data ``mv`` was evaluated on: its own tags, else its run's."""
    tags = dict(mv.tags or {})
    if not tags.get(FINGERPRINT_TAG) and mv.run_id:
        try:
            run_tags = client.get_run(mv.run_id).data.tags
        except Exception:  # a deleted run: nothing more is known
            run_tags = {}
        for key in (FINGERPRINT_TAG, DATA_TAG, DATASET_TAG, "category"):
            if not tags.get(key) and run_tags.get(key):
                tags[key] = run_tags[key]
    return EvaluationData(
        fingerprint=tags.get(FINGERPRINT_TAG, ""),
        data=tags.get(DATA_TAG, ""),
        dataset=tags.get(DATASET_TAG, ""),
        category=tags.get("category", ""),
    )


def same_data(evaluated_on: dict[str, EvaluationData]) -> bool:
    """Every version was evaluated on one known data version."""
    prints = {e.fingerprint for e in evaluated_on.values()}
    return len(prints) == 1 and "" not in prints


def compare(
    client: Any,
    name: str,
    versions: dict[str, Any],
    stored: dict[str, dict[str, float]],
    data_of: str,
    context: RescoreContext | None,
) -> Comparison:
    """The numbers that rank ``versions`` (version → ModelVersion) fairly.

    Stored metrics where all were evaluated on the same data and no ``--data`` was named; otherwise every
    version re-scored on ``context.data`` or on the evaluation data of version ``data_of``.
    """
    evaluated_on = {v: evaluation_data(client, mv) for v, mv in versions.items()}
    comparison = Comparison(name, evaluated_on, stored)
    if (context is None or context.data is None) and same_data(evaluated_on):
        comparison.reason = f"all evaluated on data {evaluated_on[data_of].short}"
        return comparison
    if context is None:
        raise ComparisonUnavailable(
            f"{name}: versions {', '.join(versions)} were evaluated on different data and no re-scoring was asked for"
        )
    target = evaluated_on[data_of]
    if context.data is not None:
        data, comparison.reason = context.data, f"--data {context.data}"
    else:
        data = target.data
        comparison.reason = f"evaluated on different data; re-scored on version {data_of}'s evaluation data"
        if not data:
            raise ComparisonUnavailable(
                f"{name}: version {data_of} records no data root, so the versions cannot be re-scored on its data; "
                "pass --data ROOT (an MVTec-layout root holding its category) or --force"
            )
    category = target.category or next((e.category for e in evaluated_on.values() if e.category), "")
    root = _local(name, data, category, context)
    from adkd.pipelines.data.fingerprint import data_fingerprint

    fingerprint = data_fingerprint(root, category)
    if context.data is None and target.fingerprint and fingerprint != target.fingerprint:
        raise ComparisonUnavailable(
            f"{name}: the data at {data} changed since version {data_of} was evaluated on it (fingerprint "
            f"{target.short} then, {fingerprint[:12]} now); pass --data {data} to compare on it as it is, or --force"
        )
    comparison.data, comparison.fingerprint = data, fingerprint
    comparison.rescored = {v: _score(name, v, root, category, context) for v in versions}
    return comparison


def _local(name: str, data: str, category: str, context: RescoreContext) -> Path:
    from adkd.platform.storage.data_roots import local_root

    try:
        root = local_root(data, context.cache_dir, context.s3_endpoint_url, [category] if category else None)
    except AdkdError as exc:
        raise ComparisonUnavailable(f"{name}: cannot re-score on {data}: {exc}; pass --data ROOT or --force") from None
    except Exception as exc:  # S3 and network failures arrive as the client library's own errors
        raise ComparisonUnavailable(
            f"{name}: cannot reach {data} to re-score ({type(exc).__name__}: {first_line(exc)}); "
            "pass --data ROOT or --force"
        ) from None
    if category and not (root / category).is_dir():
        raise ComparisonUnavailable(
            f"{name}: {data} holds no category '{category}' to re-score on; pass --data ROOT or --force"
        )
    return root


def _score(name: str, version: str, root: Path, category: str, context: RescoreContext) -> dict[str, float]:
    from adkd.pipelines.evaluate.artifact_metrics import metrics_on_data
    from adkd.platform.registry.resolve import resolve_onnx

    try:
        onnx_path, _ = resolve_onnx(f"models:/{name}/{version}", context.tracking_uri, context.cache_dir)
    except AdkdError as exc:
        raise ComparisonUnavailable(f"{name}: cannot fetch version {version}'s model to re-score it: {exc}") from None
    try:
        # ONNX Runtime on the fp32 file: the runtime every stored test/ number was measured on, so re-scored and
        # stored numbers compare alike whatever variant `auto` serves.
        return metrics_on_data(onnx_path, root, category, "onnxruntime").metrics
    except AdkdError as exc:
        raise ComparisonUnavailable(f"{name}: re-scoring version {version} on {root} failed: {exc}") from None
