"""The docs stay inside the repository and figures stay in benchmarks/RESULTS.md, where they are measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Words that only a measurement brings into a sentence about settings.
MEASURED = re.compile(r"AUROC|AUPRO|\bPRO\b|measured|\d\s*%|\bmin\b|minutes|\bs/epoch|images/s|faster|slower|~\s*\d")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_links_resolve_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    mentioned = set(re.findall(r"(?<![\w.])\.\./[\w./-]+", text))
    outside = sorted(m for m in mentioned if not (doc.parent / m).resolve().is_relative_to(REPO))
    assert not outside, f"{doc.name} points outside the repository: {outside}"
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(REPO) or not path.exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to files that are not in the repository: {broken}"


def test_readme_links_the_internals() -> None:
    assert "](docs/internals.md)" in (REPO / "README.md").read_text()


def test_preset_descriptions_name_settings_and_leave_figures_to_results() -> None:
    from adkd.pipelines.train.presets import PRESETS

    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    headings = [line.lstrip("#").strip() for line in results.splitlines() if line.startswith("#")]
    for name, by_model in PRESETS.items():
        for model, preset in by_model.items():
            where = f"preset {name} / {model}"
            assert not MEASURED.findall(preset.description), f"{where} repeats a measured figure: {preset.description}"
            if "RESULTS.md" in preset.description:  # each section it cites exists
                for section in re.findall(r'"([^"]+)"', preset.description):
                    assert any(h.startswith(section) for h in headings), f"{where}: no RESULTS.md section '{section}'"
