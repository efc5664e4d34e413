"""Where the benchmarks write: ``benchmarks/results/`` for raw figures, sections of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"


def write_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)


def write_results(name: str, payload: dict) -> Path:
    """``payload`` as ``benchmarks/results/<name>.json`` (the folder made when missing); the file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def load_span(before: tuple[float, float, float]) -> str:
    """The 1/5/15-minute load averages before a run (``os.getloadavg()`` then) and now, as the tables print them."""
    now = os.getloadavg()
    return " / ".join(f"{x:.1f}" for x in before) + " before, " + " / ".join(f"{x:.1f}" for x in now) + " after"
