"""`adkd benchmark` without Ray: grid files and their errors, the shipped grids, jobs and overrides, the report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adkd.errors import ConfigError
from adkd.platform.benchmark.grid import Overrides, build_jobs, deviations, load_grid, shipped_grids
from adkd.platform.benchmark.report import NOT_RUN, BenchmarkReport, Cell, ReportRow
from adkd.platform.benchmark.runner import check_requests
from tests.cli_process import run_adkd

REPO = Path(__file__).resolve().parents[3]
SHIPPED = (
    "seed-mrkd-table1-3",
    "seed-mrkd-table2",
    "seed-mrkd-table4",
    "seed-mrkd-table5",
    "seed-mrkd-table6",
    "seed-mrkd-table7",
    "seed-stfpm-ae-table2",
    "tiling-resolution",
)

GOOD = """
name = "g"
categories = ["a", "b"]
models = ["rd"]
preset = "cpu-smoke"

[[rows]]
label = "one"
set = ["optimizer.lr=0.01"]

[[rows]]
label = "two"
"""


def _write(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rowz = 1\n" + GOOD, "unknown key 'rowz'"),
        (GOOD.replace('label = "two"', 'label = "two"\nsett = ["epochs=1"]'), "unknown key 'rows[1] ('two').sett'"),
        (GOOD.replace('categories = ["a", "b"]\n', ""), "missing key 'categories'"),
        (GOOD.replace('"optimizer.lr=0.01"', '"optimizer.lr"'), "key 'rows[0] ('one').set"),
        (GOOD.replace('preset = "cpu-smoke"', 'preset = "cpu-smoke"\nmetric = "speed"'), "key 'metric'"),
        (GOOD.replace('categories = ["a", "b"]', 'categories = ["a", "a"]'), "listed twice: a"),
        (GOOD.replace("[[rows]]", "", 2).replace('label = "one"', "").replace('label = "two"', ""), "rows"),
        ("name = 'g'\ncategories = [\n", "cannot be parsed"),
    ],
)
def test_a_malformed_grid_is_one_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_grid(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_malformed_grid_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    text = "name: g\ncategories: [a]\nmodels: [rd]\nrows:\n  - label: one\n    sett: [epochs=1]\n"
    path = _write(tmp_path, text, "bad.yaml")  # a YAML grid with a misspelt row key
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(tmp_path / "runs")}
    proc = run_adkd(
        ["benchmark", str(path), "--data", str(tmp_path)], env=env, cwd=tmp_path, timeout=300, start_warm=False
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "unknown key 'rows[0] ('one').sett'" in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_every_shipped_grid_is_listed_and_loads() -> None:
    assert tuple(shipped_grids()) == SHIPPED
    result = CliRunner().invoke(_app(), ["benchmark", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        assert name in result.output
        grid = load_grid(name)
        assert grid.rows and (grid.preset == "paper" or not name.startswith("seed-"))


def _app():
    import typer

    from adkd.cli import benchmark_cmd

    app = typer.Typer()
    benchmark_cmd.register(app)
    app.command("noop")(lambda: None)
    return app


def test_shipped_grids_carry_the_papers_numbers() -> None:
    table = load_grid("seed-mrkd-table1-3")
    rd, mrkd = table.rows
    assert rd.model == "rd" and mrkd.model == "mrkd"
    assert rd.paper["mean"] == {"image_auroc": 98.5, "pixel_auroc": 97.8, "aupro": 93.9}
    assert rd.paper["transistor"] == {"image_auroc": 96.7, "pixel_auroc": 92.5, "aupro": 78.0}
    assert len(table.categories) == 15 and set(rd.paper) == {"mean", *table.categories}
    # The per-category RD4AD numbers average to the published means (REFERENCE.md section 1.3).
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        mean = sum(rd.paper[c][metric] for c in table.categories) / 15
        assert mean == pytest.approx(rd.paper["mean"][metric], abs=0.05)
    assert mrkd.paper == {
        "mean": {"image_auroc": 99.1, "pixel_auroc": 98.5, "aupro": 95.9},
        "bottle": {"image_auroc": 100.0, "pixel_auroc": 98.9},
    }
    # Ablation tables: only the full model's row has numbers; none is invented for the others.
    six = load_grid("seed-mrkd-table6")
    assert [r.label for r in six.rows] == ["baseline", "+SimAM", "+SCConv", "+SCConv +SimAM"]
    assert [bool(r.paper) for r in six.rows] == [False, False, False, True]
    assert load_grid("seed-mrkd-table2").rows[1].paper == {"mean": {"image_auroc": 90.9}}


def test_tiling_grid_compares_untiled_sizes_with_tiles_at_own_resolution(tmp_path: Path) -> None:
    (tmp_path / "bottle").mkdir()
    grid = load_grid("tiling-resolution")
    _, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path), epochs=1, weights="none"))
    by_row = {job.row: job.config for job in jobs}
    assert all(job.runnable for job in jobs), [job.reason for job in jobs]
    assert by_row["untiled 128 px"].eval_size == 128 and not by_row["untiled 256 px"].tiling.enabled
    tiled = by_row["tiled 256 px tiles, own resolution"]
    assert tiled.tiling.tile_size == 256 and tiled.data_size is None and tiled.eval_size == 256
    assert by_row["tiled 128 px tiles, own resolution"].tiling.tile_size == 128


def test_table6_scaled_down_to_bottle_says_how_it_differs_from_the_paper(tmp_path: Path) -> None:
    (tmp_path / "bottle").mkdir()
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    overrides = Overrides(
        data=str(tmp_path),
        categories=["bottle"],
        epochs=10,
        image_size=256,
        backbone="mobilenet_v2",
        weights=str(weights),
    )
    rows, categories, jobs = build_jobs(load_grid("seed-mrkd-table6"), overrides)
    assert categories == ["bottle"] and len(rows) == 4 and len(jobs) == 4
    assert all(j.runnable for j in jobs)
    options = {j.row: (j.config.model_options["use_simam"], j.config.model_options["use_scconv"]) for j in jobs}
    assert options == {
        "baseline": (False, False),
        "+SimAM": (True, False),
        "+SCConv": (False, True),
        "+SCConv +SimAM": (True, True),
    }
    config = jobs[0].config
    assert (config.backbone, config.image_size, config.epochs, config.weights) == (
        "mobilenet_v2",
        256,
        10,
        str(weights),
    )
    assert config.optimizer.lr == 1e-3  # the rest stays the paper preset's
    notes = deviations(jobs)
    assert notes == ["backbone: wide_resnet50_2 → mobilenet_v2", "epochs: 200 → 10", "weights: imagenet → w.pth"]
    assert len({j.key for j in jobs}) == 4 and all("/" not in j.key and " " not in j.key for j in jobs)


def test_jobs_that_cannot_run_say_why(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    grid = load_grid(str(_write(tmp_path, GOOD)))
    _, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path)))
    reasons = {(j.row, j.category): j.reason for j in jobs}
    assert reasons[("one", "a")] is None
    assert "category 'b' not found" in reasons[("one", "b")]
    _, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path), weights=str(tmp_path / "missing.pth")))
    assert [j.reason for j in jobs if j.category == "a"] == [
        f"no weights: teacher weights file {tmp_path}/missing.pth does not exist"
    ] * 2


def test_uncached_imagenet_weights_offline_are_not_run_on_the_embedded_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bottle").mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weight cache
    monkeypatch.setenv("ADKD_OFFLINE", "1")
    grid = load_grid("seed-mrkd-table5")
    _, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path), categories=["bottle"]))
    assert {j.reason for j in jobs} == {
        f"no weights: ImageNet weights for wide_resnet50_2 are not cached "
        f"({tmp_path}/torch/hub/checkpoints/wide_resnet50_2-95faca4d.pth) and ADKD_OFFLINE is set"
    }
    # A cluster's nodes have their own caches: the driver does not judge them.
    _, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path), categories=["bottle"]), local=False)
    assert all(j.runnable for j in jobs)


def test_epochs_override_caps_the_autoencoder_phases(tmp_path: Path) -> None:
    _, _, jobs = build_jobs(load_grid("seed-stfpm-ae-table2"), Overrides(data=str(tmp_path), epochs=3))
    by_row = {j.row: j.config for j in jobs if j.category == "bottle"}
    paper = by_row["alpha 1e-7 (paper)"]
    assert paper.model_options["ae_pretrain_epochs"] == 3 and paper.epochs == 3
    assert by_row["alpha 1e-7, AE frozen 10 epochs"].model_options["ae_freeze_epochs"] == 3
    assert by_row["alpha 1e-6"].model_options["alpha"] == 1e-6
    assert by_row["stfpm"].model == "stfpm"


def test_rows_without_a_model_run_once_per_grid_model(tmp_path: Path) -> None:
    grid = load_grid(str(_write(tmp_path, GOOD.replace('models = ["rd"]', 'models = ["rd", "stfpm"]'))))
    rows, _, jobs = build_jobs(grid, Overrides(data=str(tmp_path)))
    assert [r.label for r in rows] == ["rd one", "stfpm one", "rd two", "stfpm two"]
    assert {j.config.model for j in jobs} == {"rd", "stfpm"} and len(jobs) == 8


def test_register_and_promote_requests_are_checked_first() -> None:
    check_requests("best", "staging", tracking=True)
    with pytest.raises(ConfigError, match="--promote needs --register best"):
        check_requests(None, "production", tracking=True)
    with pytest.raises(ConfigError, match="only choice is 'best'"):
        check_requests("all", None, tracking=True)
    with pytest.raises(ConfigError, match="staging or production"):
        check_requests("best", "prod", tracking=True)
    with pytest.raises(ConfigError, match="--register needs MLflow tracking, which --no-tracking turns off"):
        check_requests("best", None, tracking=False)


def _report(metric: str = "image_auroc") -> BenchmarkReport:
    rows = [
        ReportRow("A", "rd", "paper", [], {"mean": {"image_auroc": 99.0}, "x": {"image_auroc": 98.0}}),
        ReportRow("B", "mrkd", "paper", ["epochs=1"], {}),
    ]
    cells = {
        "A": {
            "x": Cell("FINISHED", 0.90, 0.95, 0.70, 2.0, 10.0),
            "y": Cell("FINISHED", 0.80, 0.90, 0.60, 1.0, 12.0),
            "z": Cell(NOT_RUN, reason="no data: category 'z' not found under /d"),
        },
        "B": {
            "x": Cell("FINISHED", 0.90, 0.96, 0.80, 3.0, 20.0),  # ties A on image AUROC, better AUPRO
            "y": Cell("FAILED", reason="boom"),
            "z": Cell(NOT_RUN, reason="no data: category 'z' not found under /d"),
        },
    }
    return BenchmarkReport("g", "a grid", "/d", metric, rows, ["x", "y", "z"], cells, grid_categories=["x", "y", "z"])


def test_best_row_per_category_by_the_stated_metric_then_aupro() -> None:
    report = _report()
    assert report.best() == {"x": "B", "y": "A", "z": None}  # x: tie on image AUROC, B wins on AUPRO
    assert report.mean("A", "image_auroc") == pytest.approx(0.85)
    assert report.mean("B", "pixel_auroc") == pytest.approx(0.96)  # over finished categories only
    assert report.finished("B") == 1
    assert _report("pixel_auroc").best() == {"x": "B", "y": "A", "z": None}
    low_aupro = _report("aupro")
    low_aupro.cells["A"]["x"].aupro = 0.9
    assert low_aupro.best()["x"] == "A"


def test_report_files_show_rows_paper_values_and_reasons(tmp_path: Path) -> None:
    paths = _report().write(tmp_path)
    md = paths["md"].read_text()
    assert "| A | rd | 85.0 (99.0) | 92.5 | 65.0 | 1.5 | 11.0 | 2/3 |" in md
    assert "| A | 90.0 (98.0) | 80.0 ★ | not run |" in md
    assert "| B | 90.0 ★ | failed | not run |" in md
    assert "| B | y | FAILED | boom |" in md
    assert "no data: category 'z' not found" in md
    data = json.loads(paths["json"].read_text())
    assert data["best"] == {"x": "B", "y": "A", "z": None} and data["tie_break"] == "aupro"
    assert [r["label"] for r in data["rows"]] == ["A", "B"]
    assert data["rows"][0]["categories"]["z"]["status"] == NOT_RUN
    assert data["rows"][1]["best_in"] == ["x"]
    html = paths["html"].read_text()
    assert html.count("<svg") == 5  # one chart per metric: three quality metrics, minutes, ms per image
    assert "paper: 99.0" in html and "paper: 98.0" in html
    external = re.findall(r"(?:src|href)\s*=", html) + re.findall(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert external == []


def test_a_grid_none_of_whose_runs_can_start_is_one_line_before_any_work(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_RUNS_DIR": str(tmp_path / "runs")}
    missing = tmp_path / "nope"
    proc = run_adkd(
        ["benchmark", "seed-mrkd-table1-3", "--data", str(missing)],
        env=env,
        cwd=tmp_path,
        timeout=300,
        start_warm=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: no run of grid 'seed-mrkd-table1-3' can start: no data: data root {missing} does not exist "
        "(30 of 30 runs)"
    ], proc.stderr
    assert not (tmp_path / "runs").exists()  # no report, no MLflow store: refused before any work


def test_unfinished_runs_are_shown_ten_at_most() -> None:
    from adkd.cli.benchmark_cmd import unfinished_lines

    report = _report()
    assert unfinished_lines(report) == [
        "[yellow]A / z not run:[/] no data: category 'z' not found under /d",
        "[yellow]B / y failed:[/] boom",
        "[yellow]B / z not run:[/] no data: category 'z' not found under /d",
    ]
    assert unfinished_lines(report, shown=2)[1:] == [
        "[yellow]B / y failed:[/] boom",
        "... 1 more did not finish: the report lists every run",
    ]
