"""The benchmark scripts import: each one loads, and every name it imports from adkd or from a sibling script,
at its top or inside a function, exists (a moved module breaks a script that no test runs otherwise)."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
SIBLINGS = {p.stem for p in SCRIPTS}


def imported_names(source: str) -> set[tuple[str, str | None]]:
    """(module, name) of every import of adkd or of a sibling script, anywhere in ``source`` (name None: the module)."""
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in {"adkd", *SIBLINGS}:
                found.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update((a.name, None) for a in node.names if a.name.split(".")[0] in {"adkd", *SIBLINGS})
    return found


@pytest.fixture
def benchmarks_on_path() -> Iterator[None]:
    """benchmarks/ first on sys.path, as when a script runs; the path and the scripts' modules restored after."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path[:] = saved
        for name in SIBLINGS:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_and_finds_what_it_imports(script: Path, benchmarks_on_path: None) -> None:
    importlib.import_module(script.stem)
    missing = []
    for module, name in sorted(imported_names(script.read_text()), key=str):
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{module}: {exc}")
            continue
        if name is not None and not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")  # `from package import submodule`
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports what does not exist: {missing}"


def test_the_import_walk_sees_imports_inside_functions() -> None:
    source = "def f():\n    from adkd.x import y\n    import bottle_runs\nfrom os import path\n"
    assert imported_names(source) == {("adkd.x", "y"), ("bottle_runs", None)}


def test_a_failed_adkd_train_fails_its_moonshot_part(benchmarks_on_path: None) -> None:
    gpu_moonshot = importlib.import_module("gpu_moonshot")
    failed = subprocess.CompletedProcess([sys.executable, "-m", "adkd.cli.main", "train", "-c", "a"], 2, "", "error: x")
    with pytest.raises(RuntimeError, match="adkd train -c a exited with 2"):
        gpu_moonshot._check(failed)
    gpu_moonshot._check(subprocess.CompletedProcess(failed.args, 0, "", ""))


def test_a_results_section_is_replaced_in_place_or_appended(benchmarks_on_path: None, tmp_path: Path) -> None:
    write_section = importlib.import_module("results_md").write_section
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n<!-- a:begin -->\nold a\n<!-- a:end -->\n\ntext after a\n")
    write_section("a", "new a\n\n", md)
    write_section("b", "b's table", md)
    assert md.read_text() == (
        "# Benchmark results\n\n<!-- a:begin -->\nnew a\n<!-- a:end -->\n\ntext after a\n\n"
        "<!-- b:begin -->\nb's table\n<!-- b:end -->\n"
    )


def test_a_load_span_reads_before_and_after(benchmarks_on_path: None) -> None:
    span = importlib.import_module("results_md").load_span((0.25, 1.0, 12.0))
    assert re.fullmatch(r"0\.2 / 1\.0 / 12\.0 before, \d+\.\d / \d+\.\d / \d+\.\d after", span), span


def test_results_are_written_as_json_in_the_results_folder(
    benchmarks_on_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results_md = importlib.import_module("results_md")
    monkeypatch.setattr(results_md, "RESULTS_DIR", tmp_path / "results")  # not the repository's own folder
    out = results_md.write_results("graph_variants-t", {"rows": [{"ms": 1.5}], "load": "0.1 before"})
    assert out == tmp_path / "results" / "graph_variants-t.json"
    assert json.loads(out.read_text()) == {"rows": [{"ms": 1.5}], "load": "0.1 before"}
