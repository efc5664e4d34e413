"""`adkd benchmark` end to end: a 2-row grid over a synthetic category and one that does not exist.

One `adkd benchmark GRID --register best --promote staging` process (embedded Ray with 2 CPUs, a real SQLite
MLflow store) trains the two (row, category) runs at once; the tests check what it left behind. One category is
enough for everything a grid run does end to end (runs, report, registration of the best row); how rows are
ranked and averaged over several categories is the unit tests' (tests/unit/platform/test_benchmark_grid.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import run_adkd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CATEGORIES = ("weave",)
MISSING = "nope"
ROWS = ("lr 0.005", "lr 0.0005")
GRID = f"""
name = "tiny"
title = "two learning rates"
categories = ["weave", "{MISSING}"]
models = ["rd"]
preset = "cpu-smoke"
set = ["epochs=1", "batch_size=4"]

[[rows]]
label = "{ROWS[0]}"
set = ["optimizer.lr=0.005"]
paper = {{ mean = {{ image_auroc = 90.0 }}, weave = {{ image_auroc = 95.0 }} }}

[[rows]]
label = "{ROWS[1]}"
set = ["optimizer.lr=0.0005"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    tmp = tmp_path_factory.mktemp("benchmark")
    synthesize(tmp / "data", categories=list(CATEGORIES), size=64, n_train=8, n_test=6, seed=0)
    (tmp / "grid.toml").write_text(GRID)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": uri,
        "ADKD_RUNS_DIR": str(tmp / "runs"),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("ADKD_EXPERIMENT", None)
    args = [
        *("benchmark", "grid.toml", "--data", "data"),
        *("--num-cpus", "2", "--cpus-per-worker", "0.5", "--out", "report", "--register", "best"),
        *("--promote", "staging", "--experiment-name", "bench-test", "--run-name", "bench-grid"),
    ]
    proc = run_adkd(args, cwd=tmp, env=env, timeout=840)
    if proc.returncode != 0:
        pytest.fail(f"adkd benchmark exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads((tmp / "report" / "benchmark.json").read_text())
    return {"proc": proc, "tmp": tmp, "uri": uri, "report": report}


def _client(run: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(run["uri"], registry_uri=run["uri"])


def _runs(run: dict[str, Any]) -> list[Any]:
    client = _client(run)
    experiment = client.get_experiment_by_name("bench-test")
    return client.search_runs([experiment.experiment_id], max_results=100)


def test_the_grid_finishes_and_the_missing_category_is_reported_not_run(run: dict[str, Any]) -> None:
    proc = run["proc"]
    report = run["report"]
    assert [r["label"] for r in report["rows"]] == list(ROWS)
    assert report["categories"] == [*CATEGORIES, MISSING]
    for row in report["rows"]:
        assert row["categories_finished"] == len(CATEGORIES)
        missing = row["categories"][MISSING]
        assert missing["status"] == "NOT RUN" and f"category '{MISSING}' not found" in missing["reason"]
        for category in CATEGORIES:
            cell = row["categories"][category]
            assert cell["status"] == "FINISHED" and cell["epochs_run"] == 1
            assert cell["minutes"] > 0 and cell["ms_per_image"] > 0
    assert f"{MISSING} not run" in proc.stdout.replace("\n", " ")


def test_one_child_run_per_row_and_category_under_one_parent_with_the_report_as_artifacts(run: dict[str, Any]) -> None:
    runs = _runs(run)
    parents = [r for r in runs if r.data.tags.get("command") == "benchmark"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["mlflow.runName"] == "bench-grid"  # --run-name (the experiment: --experiment-name)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    pairs = sorted((r.data.tags["benchmark_row"], r.data.tags["category"]) for r in children)
    assert pairs == sorted((row, c) for row in ROWS for c in CATEGORIES)
    assert {r.info.status for r in children} == {"FINISHED"}
    artifacts = {a.path for a in _client(run).list_artifacts(parent.info.run_id, "benchmark")}
    assert artifacts == {"benchmark/benchmark.md", "benchmark/benchmark.json", "benchmark/benchmark.html"}
    # The report's cells point at their child runs, whose logged metrics are the report's numbers.
    by_id = {r.info.run_id: r for r in children}
    for row in run["report"]["rows"]:
        for category in CATEGORIES:
            cell = row["categories"][category]
            child = by_id[cell["run_id"]]
            assert child.data.tags["benchmark_row"] == row["label"] and child.data.tags["category"] == category
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                assert child.data.metrics[f"test/{metric}"] == pytest.approx(cell[metric]), (metric, cell)


def test_report_files_mark_the_best_row_by_image_auroc_then_aupro(run: dict[str, Any]) -> None:
    report = run["report"]
    assert report["metric"] == "image_auroc" and report["tie_break"] == "aupro"
    for category in CATEGORIES:
        cells = {r["label"]: r["categories"][category] for r in report["rows"]}
        expected = max(ROWS, key=lambda label: (cells[label]["image_auroc"], cells[label]["aupro"]))
        assert report["best"][category] == expected
    assert report["best"][MISSING] is None
    md = (run["tmp"] / "report" / "benchmark.md").read_text()
    assert "★" in md and all(f"| {label} | rd |" in md for label in ROWS)
    assert "(95.0)" in md  # the paper's weave number beside the run's
    html = (run["tmp"] / "report" / "benchmark.html").read_text()
    assert html.count("<svg") == 5 and "<script" not in html


def test_register_best_registers_exactly_one_version_per_category(run: dict[str, Any]) -> None:
    client = _client(run)
    report = run["report"]
    names = sorted(m.name for m in client.search_registered_models())
    assert names == sorted(f"adkd-{c}" for c in CATEGORIES)
    for category in CATEGORIES:
        versions = client.search_model_versions(f"name='adkd-{category}'")
        assert len(versions) == 1
        best = next(r for r in report["rows"] if r["label"] == report["best"][category])
        assert versions[0].run_id == best["categories"][category]["run_id"]
        assert best["categories"][category]["registered_version"] == str(versions[0].version) == "1"
        aliases = client.get_registered_model(f"adkd-{category}").aliases
        assert {k: str(v) for k, v in aliases.items()} == {"staging": "1"}
