"""Monitoring numbers: KS and PSI against the normals, the flag rate's expectation, feedback rates, the bounds."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from adkd.platform.monitoring.statistics import (
    checks,
    expected_flag_rate,
    measure,
    over_time,
    psi,
    psi_bins,
)
from adkd.settings import MonitorSettings

T0 = datetime(2026, 5, 1, 8, 0, 0)


def _rows(scores, threshold: float, latency: float = 10.0, correct=None) -> list[dict]:
    out = []
    for i, s in enumerate(scores):
        out.append(
            {
                "score": float(s),
                "normalized_score": float(np.clip(s - threshold + 0.5, 0, 1)),
                "verdict": "anomalous" if s > threshold else "normal",
                "latency_ms": latency + i % 5,
                "correct": None if correct is None else correct[i],
                "created_at": T0 + timedelta(minutes=i),
            }
        )
    return out


def test_same_distribution_stays_within_bounds_and_a_shift_crosses_ks_and_psi() -> None:
    rng = np.random.default_rng(0)
    normals = rng.normal(1.0, 0.1, 300)
    threshold = float(np.quantile(normals, 0.99))
    same = measure(_rows(rng.normal(1.0, 0.1, 200), threshold), normals.tolist(), threshold, 0.99)
    shifted = measure(_rows(rng.normal(1.3, 0.1, 200), threshold), normals.tolist(), threshold, 0.99)
    bounds = MonitorSettings()
    assert same.ks_pvalue > 0.01 and same.psi < 0.25 and same.psi_bins == 10
    assert not [c.name for c in checks(same, bounds) if c.crossed]
    assert shifted.ks_pvalue < 1e-10 and shifted.psi > 1.0
    crossed = {c.name for c in checks(shifted, bounds) if c.crossed}
    assert {"ks_pvalue", "psi", "flag_pvalue"} <= crossed
    assert shifted.flag_rate > 0.5 and shifted.flagged == round(shifted.flag_rate * 200)


def test_psi_is_zero_for_the_reference_itself_and_grows_with_the_shift() -> None:
    normals = np.linspace(0, 1, 101)
    assert psi(normals, normals, bins=10) == pytest.approx(0.0, abs=1e-9)
    assert psi(normals + 0.05, normals) < psi(normals + 0.3, normals)


def test_psi_gets_only_as_many_bins_as_its_noise_allows() -> None:
    # Two samples of one distribution: PSI ~ (1/n + 1/m) chi2(bins - 1); its 99.9 % point must stay in the bound.
    assert psi_bins(100, 200, 0.25) == 4 and psi_bins(100_000, 100_000, 0.25) == 10
    assert psi_bins(24, 24, 0.25) is None
    crossings = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        crossings += psi(rng.normal(0, 1, 100), rng.normal(0, 1, 200), psi_bins(100, 200, 0.25)) > 0.25
    assert crossings <= 3  # 0.1 % expected; measured 0.2 % over 2000 pairs


def test_expected_flag_rate_is_what_a_small_reference_set_can_promise() -> None:
    six = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    # A threshold at the largest of 6 normals: a new normal exceeds it with probability 1/7, not 1 %.
    assert expected_flag_rate(six, 1.5, 0.99) == pytest.approx(1 / 7)
    many = np.linspace(0, 1, 999)
    assert expected_flag_rate(many, 2.0, 0.99) == pytest.approx(0.01)


def test_feedback_rates_count_only_verdicts_with_feedback() -> None:
    threshold = 1.0
    scores = [2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5]
    correct = [False, True, None, True, True, False, None]  # one false alarm of 2, one miss of 3
    stats = measure(_rows(scores, threshold, correct=correct), [0.5, 0.6, 0.7], threshold, 0.99)
    assert (stats.flagged_with_feedback, stats.false_alarms) == (2, 1)
    assert (stats.passed_with_feedback, stats.misses) == (3, 1)
    assert stats.false_alarm_rate == pytest.approx(0.5) and stats.miss_rate == pytest.approx(1 / 3)


def test_checks_without_enough_data_are_reported_not_checked() -> None:
    normals = [0.5 + 0.01 * i for i in range(6)]
    stats = measure(_rows([3.0] * 5, 1.0), normals, 1.0, 0.99)
    bounds = MonitorSettings(min_verdicts=20)
    by_name = {c.name: c for c in checks(stats, bounds)}
    assert not by_name["ks_pvalue"].checked and "min_verdicts" in by_name["ks_pvalue"].why_not
    assert not any(c.crossed for c in by_name.values() if c.name != "latency_p99_ms")
    many = measure(_rows([3.0] * 30, 1.0), normals, 1.0, 0.99)
    by_name = {c.name: c for c in checks(many, bounds)}
    assert by_name["ks_pvalue"].crossed and by_name["flag_pvalue"].crossed
    assert not by_name["psi"].checked and "noise alone" in by_name["psi"].why_not


def test_latency_bound_and_description_name_the_statistic() -> None:
    stats = measure(_rows([0.5] * 30, 1.0, latency=5000.0), [0.5] * 30, 1.0, 0.99)
    crossed = [c for c in checks(stats, MonitorSettings()) if c.crossed]
    assert [c.name for c in crossed] == ["latency_p99_ms"]
    assert crossed[0].describe().startswith("latency_p99_ms=")
    assert stats.latency_p50_ms == pytest.approx(5002.0)


def test_over_time_buckets_cover_every_verdict() -> None:
    rows = _rows(np.linspace(0.5, 2.0, 40), 1.0)
    buckets = over_time(rows, [0.5, 0.6, 0.7, 0.8], n_buckets=8)
    assert sum(b.n for b in buckets) == 40 and len(buckets) == 8
    assert buckets[0].flag_rate == 0.0 and buckets[-1].flag_rate == 1.0
    assert buckets[-1].ks_statistic == pytest.approx(1.0)


def test_the_report_is_one_self_contained_html_file(tmp_path) -> None:
    import re

    from adkd.platform.monitoring.monitor import MonitorOutcome
    from adkd.platform.monitoring.report import write_report

    rng = np.random.default_rng(1)
    normals = rng.normal(1.0, 0.1, 40).tolist()
    rows = _rows(rng.normal(1.4, 0.1, 30), 1.2)
    stats = measure(rows, normals, 1.2, 0.99)
    outcome = MonitorOutcome("disc", "adkd-disc", "3", T0, T0 + timedelta(hours=1), stats,
                             checks(stats, MonitorSettings()), over_time(rows, normals), normals,
                             [r["score"] for r in rows], 1.2, 0.99, "validation")  # fmt: skip
    path = write_report(outcome, tmp_path / "r" / "report.html")
    html = path.read_text()
    assert "adkd-disc v3" in html and "bound crossed" in html and 'data-statistic="ks_pvalue"' in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2
    assert not re.findall(r'(?:src|href)="(?!data:)', html)  # nothing fetched from anywhere
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
