"""The monitoring page: checks against bounds, counts and plots over time, self-contained (plots inlined).

``fragment`` is the part the station's monitoring page shows; ``write_report`` wraps it into one HTML file
that needs nothing else (``adkd monitor --report``, logged as the monitoring run's artifact).
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader

from adkd.platform.monitoring.monitor import MonitorOutcome
from adkd.platform.monitoring.statistics import pct

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f6f7f9}
h1,h2{margin:.4rem 0}
table{border-collapse:collapse;margin:.5rem 0;background:#fff}
th,td{border:1px solid #d6dbe1;padding:.3rem .6rem;text-align:left;font-variant-numeric:tabular-nums}
th{background:#eef1f4}
.ok{color:#17663a;font-weight:600}.bad{color:#b3261e;font-weight:700}.muted{color:#69737d}
.banner{padding:.6rem 1rem;border-radius:6px;margin:.6rem 0;font-weight:600}
.banner.ok{background:#e3f4e8}.banner.bad{background:#fbe4e2}
img.plot{max-width:100%;background:#fff;border:1px solid #d6dbe1}
"""

FRAGMENT = _env.get_template("fragment.html")

PAGE = _env.get_template("page.html")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tick-locator notices over short spans: adkd's output stays its own
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(o: MonitorOutcome) -> list[tuple[str, str]]:
    """(title, base64 PNG) for the score distribution and the statistics over time."""
    # Figure objects, not pyplot: the station draws these for concurrent requests, and pyplot's state is global.
    from matplotlib.figure import Figure

    out = []
    fig = Figure(figsize=(7.5, 3.0))
    ax = fig.subplots()
    values = np.asarray(o.scores + o.normals, dtype=float)
    bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(values) // 3))) if len(values) else 10
    if o.normals:
        ax.hist(o.normals, bins=bins, density=True, alpha=0.55, label=f"validation normals ({len(o.normals)})")
    ax.hist(o.scores, bins=bins, density=True, alpha=0.55, label=f"production ({len(o.scores)})")
    ax.axvline(o.threshold, color="#b3261e", linestyle="--", label="threshold")
    ax.set_xlabel("image score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    out.append(("Image scores: production against the validation normals", _png(fig)))

    if len(o.buckets) > 1:  # one stretch of time has no "over time" to draw
        times = [b.end for b in o.buckets]
        fig = Figure(figsize=(10, 5.5))
        axes = fig.subplots(2, 2, sharex=True)
        ax = axes[0][0]
        ax.plot(times, [b.flag_rate for b in o.buckets], marker="o", label="flag rate")
        if o.stats.expected_flag_rate is not None:
            ax.axhline(o.stats.expected_flag_rate, color="#69737d", linestyle=":", label="expected")
        ax.set_title("flag rate", fontsize=10)
        ax.legend(fontsize=7)
        ax = axes[0][1]
        ax.plot(times, [b.mean_normalized_score for b in o.buckets], marker="o")
        ax.axhline(0.5, color="#b3261e", linestyle="--")
        ax.set_title("mean normalised score (0.5 = threshold)", fontsize=10)
        ax = axes[1][0]
        ks = [b.ks_statistic if b.ks_statistic is not None else np.nan for b in o.buckets]
        ax.plot(times, ks, marker="o")
        ax.set_title("KS statistic against the normals", fontsize=10)
        ax = axes[1][1]
        ax.plot(times, [b.latency_p50_ms for b in o.buckets], marker="o", label="p50")
        ax.plot(times, [b.latency_p99_ms for b in o.buckets], marker="o", label="p99")
        ax.set_title("latency per image (ms)", fontsize=10)
        ax.legend(fontsize=7)
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(maxticks=6)
        for axis in axes[1]:
            axis.xaxis.set_major_locator(locator)
            axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        out.append(("Over time", _png(fig)))
    return out


def fragment(o: MonitorOutcome) -> str:
    return FRAGMENT.render(o=o, s=o.stats, plots=plots(o), pct=pct, ms=_ms, num=_num)


def page_html(o: MonitorOutcome) -> str:
    """The fragment wrapped into one HTML page that needs nothing else."""
    return PAGE.render(o=o, style=STYLE, body=fragment(o))


def write_report(o: MonitorOutcome, path: Path) -> Path:
    """One self-contained HTML file (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page_html(o), encoding="utf-8")
    os.replace(tmp, path)
    o.report_path = path
    return path
