"""The numbers ``adkd monitor`` checks: recent production image scores against the validation normals.

- Drift: the two-sample Kolmogorov-Smirnov test (scipy) and the population stability index (PSI) over bins
  cut at the normals' quantiles. Two samples of one distribution give PSI ≈ (1/n + 1/m) χ²(bins - 1), so PSI
  is checked only where its 99.9 % point under no drift stays within the bound, with the most bins (up to 10)
  that allows; with fewer images its noise alone would cross the usual 0.25, and it is reported unchecked.
- Flag rate against the rate expected at the threshold. The threshold is the ``quantile`` of n normal
  scores, so a new normal image exceeds it with probability about max(1 - quantile, (k + 1) / (n + 1)),
  k = normals above it (the second term is what a small reference set can promise). A one-sided binomial
  test says whether the observed flags are more than that.
- Confirmed error rates from operator feedback: false alarms (flagged, marked wrong) among flagged verdicts
  with feedback, misses (passed, marked wrong) among passed verdicts with feedback.
- Latency p50/p99 per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

PSI_BINS = 10
PSI_NOISE_QUANTILE = 0.999  # how sure PSI must be that a crossing is not sampling noise
_PSI_FLOOR = 1e-4  # share given to an empty bin, so ln(p/q) stays finite


@dataclass
class Check:
    """One statistic against its bound."""

    name: str
    value: float | None
    bound: float
    direction: str  # "min": value below bound crosses it; "max": above
    what: str
    checked: bool = True
    why_not: str = ""

    @property
    def crossed(self) -> bool:
        if not self.checked or self.value is None or not math.isfinite(self.value):
            return False
        return self.value < self.bound if self.direction == "min" else self.value > self.bound

    def describe(self) -> str:
        sign = "<" if self.direction == "min" else ">"
        return f"{self.name}={self.value:.4g} {sign} {self.bound:g} ({self.what})"


@dataclass
class Stats:
    """Everything one monitoring pass measured."""

    n: int
    n_normals: int
    psi_bins: int | None = None  # None: too few images for PSI to tell drift from noise at its bound
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    psi: float | None = None
    flagged: int = 0
    flag_rate: float | None = None
    expected_flag_rate: float | None = None
    flag_pvalue: float | None = None
    flagged_with_feedback: int = 0
    false_alarms: int = 0
    false_alarm_rate: float | None = None
    passed_with_feedback: int = 0
    misses: int = 0
    miss_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    mean_normalized_score: float | None = None

    def metrics(self) -> dict[str, float]:
        """The finite numbers, for MLflow."""
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, int | float) and value is not None and math.isfinite(float(value)):
                out[key] = float(value)
        return out


def ks_test(scores: np.ndarray, normals: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    result = ks_2samp(scores, normals)
    return float(result.statistic), float(result.pvalue)


def psi_bins(n_scores: int, n_normals: int, bound: float) -> int | None:
    """The most bins (up to ``PSI_BINS``) at which PSI's noise stays within ``bound``; None when even 2 do not."""
    from scipy.stats import chi2

    noise = 1.0 / max(n_scores, 1) + 1.0 / max(n_normals, 1)
    for bins in range(PSI_BINS, 1, -1):
        if chi2.ppf(PSI_NOISE_QUANTILE, bins - 1) * noise <= bound:
            return bins
    return None


def psi(scores: np.ndarray, normals: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``scores`` against ``normals`` (bins at the normals' quantiles)."""
    edges = np.unique(np.quantile(normals, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, normals, side="right"), minlength=len(edges) + 1) / len(normals)
    actual = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1) / len(scores)
    expected = np.maximum(expected, _PSI_FLOOR)
    actual = np.maximum(actual, _PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def expected_flag_rate(normals: np.ndarray, threshold: float, quantile: float | None) -> float:
    above = int(np.sum(normals > threshold))
    small_sample = (above + 1) / (len(normals) + 1)
    return max(1.0 - quantile if quantile is not None else 0.0, small_sample)


def measure(
    rows: list[dict[str, Any]], normals: list[float], threshold: float, quantile: float | None, psi_max: float = 0.25
) -> Stats:
    """Statistics of verdict rows (``score``, ``verdict``, ``latency_ms``, ``correct``) against ``normals``.

    ``psi_max`` (the bound) decides how many bins PSI can afford (``psi_bins``)."""
    ref = np.asarray(normals, dtype=np.float64)
    stats = Stats(n=len(rows), n_normals=len(ref))
    if not rows:
        return stats
    scores = np.asarray([r["score"] for r in rows], dtype=np.float64)
    latency = np.asarray([r["latency_ms"] for r in rows], dtype=np.float64)
    flagged = np.asarray([r["verdict"] == "anomalous" for r in rows])
    stats.mean_normalized_score = float(np.mean([r["normalized_score"] for r in rows]))
    stats.latency_p50_ms = float(np.percentile(latency, 50))
    stats.latency_p99_ms = float(np.percentile(latency, 99))
    stats.flagged = int(flagged.sum())
    stats.flag_rate = float(flagged.mean())
    if len(ref):
        stats.ks_statistic, stats.ks_pvalue = ks_test(scores, ref)
        stats.psi_bins = psi_bins(len(scores), len(ref), psi_max)
        stats.psi = psi(scores, ref, stats.psi_bins or 2)
        from scipy.stats import binomtest

        stats.expected_flag_rate = expected_flag_rate(ref, threshold, quantile)
        stats.flag_pvalue = float(binomtest(stats.flagged, len(rows), stats.expected_flag_rate, "greater").pvalue)
    with_feedback = [r for r in rows if r.get("correct") is not None]
    flagged_fb = [r for r in with_feedback if r["verdict"] == "anomalous"]
    passed_fb = [r for r in with_feedback if r["verdict"] != "anomalous"]
    stats.flagged_with_feedback, stats.passed_with_feedback = len(flagged_fb), len(passed_fb)
    stats.false_alarms = sum(not r["correct"] for r in flagged_fb)
    stats.misses = sum(not r["correct"] for r in passed_fb)
    stats.false_alarm_rate = stats.false_alarms / len(flagged_fb) if flagged_fb else None
    stats.miss_rate = stats.misses / len(passed_fb) if passed_fb else None
    return stats


def checks(stats: Stats, bounds: Any) -> list[Check]:
    """``stats`` against ``bounds`` (``MonitorSettings``); checks that lack data are listed as not checked."""
    enough = stats.n >= bounds.min_verdicts
    few = f"{stats.n} verdicts, fewer than monitor.min_verdicts={bounds.min_verdicts}"
    no_ref = "the model carries no validation normal scores"
    out = [
        Check("ks_pvalue", stats.ks_pvalue, bounds.ks_pvalue_min, "min", "KS test: scores differ from the normals"),
        Check("psi", stats.psi, bounds.psi_max, "max", "population stability index of the scores"),
        Check(
            "flag_pvalue",
            stats.flag_pvalue,
            bounds.flag_rate_pvalue_min,
            "min",
            f"binomial test: flag rate {pct(stats.flag_rate)} against {pct(stats.expected_flag_rate)} expected",
        ),
        Check("false_alarm_rate", stats.false_alarm_rate, bounds.false_alarm_rate_max, "max", "confirmed false alarms"),
        Check("miss_rate", stats.miss_rate, bounds.miss_rate_max, "max", "confirmed missed defects"),
        Check("latency_p99_ms", stats.latency_p99_ms, bounds.latency_p99_ms_max, "max", "per-image latency p99"),
    ]
    for check in out:
        if check.name in ("ks_pvalue", "psi", "flag_pvalue"):
            if not enough:
                check.checked, check.why_not = False, few
            elif check.value is None:
                check.checked, check.why_not = False, no_ref
            elif check.name == "psi" and stats.psi_bins is None:
                check.checked = False
                check.why_not = (
                    f"{stats.n} verdicts and {stats.n_normals} normals: PSI's noise alone could pass {bounds.psi_max}"
                )
        elif check.name == "false_alarm_rate" and stats.flagged_with_feedback < bounds.min_feedback:
            check.checked = False
            check.why_not = f"{stats.flagged_with_feedback} flagged verdicts with feedback (< {bounds.min_feedback})"
        elif check.name == "miss_rate" and stats.passed_with_feedback < bounds.min_feedback:
            check.checked = False
            check.why_not = f"{stats.passed_with_feedback} passed verdicts with feedback (< {bounds.min_feedback})"
        elif check.name == "latency_p99_ms" and check.value is None:
            check.checked, check.why_not = False, "no verdicts"
    return out


def pct(value: float | None) -> str:
    """A rate as the checks and the report show it."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


@dataclass
class Bucket:
    """One stretch of time in the plots."""

    start: datetime
    end: datetime
    n: int
    flag_rate: float
    mean_normalized_score: float
    ks_statistic: float | None
    latency_p50_ms: float
    latency_p99_ms: float


def over_time(rows: list[dict[str, Any]], normals: list[float], n_buckets: int = 12) -> list[Bucket]:
    """Verdicts cut into up to ``n_buckets`` equal stretches of time (empty stretches left out)."""
    if not rows:
        return []
    times = [r["created_at"] for r in rows]
    start, end = min(times), max(times)
    span = (end - start).total_seconds()
    n_buckets = max(1, min(n_buckets, len(rows) // 2 or 1)) if span > 0 else 1
    width = span / n_buckets if span > 0 else 1.0
    ref = np.asarray(normals, dtype=np.float64)
    groups: list[list[dict[str, Any]]] = [[] for _ in range(n_buckets)]
    for row in rows:
        index = min(int((row["created_at"] - start).total_seconds() / width), n_buckets - 1) if span > 0 else 0
        groups[index].append(row)
    out = []
    from datetime import timedelta

    for i, group in enumerate(groups):
        if not group:
            continue
        scores = np.asarray([r["score"] for r in group])
        latency = np.asarray([r["latency_ms"] for r in group])
        ks = ks_test(scores, ref)[0] if len(ref) else None
        out.append(
            Bucket(
                start=start + timedelta(seconds=i * width),
                end=start + timedelta(seconds=(i + 1) * width),
                n=len(group),
                flag_rate=float(np.mean([r["verdict"] == "anomalous" for r in group])),
                mean_normalized_score=float(np.mean([r["normalized_score"] for r in group])),
                ks_statistic=ks,
                latency_p50_ms=float(np.percentile(latency, 50)),
                latency_p99_ms=float(np.percentile(latency, 99)),
            )
        )
    return out
