"""Fast checks of the multi-category CLI surface and its pure helpers (no Ray started, no training)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from adkd.errors import ConfigError, DataError


def _app() -> typer.Typer:
    from adkd.cli import train_cmd

    app = typer.Typer()
    train_cmd.register(app)
    return app


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adkd.pipelines.data.synthetic_dataset import synthesize

    root = tmp_path_factory.mktemp("cli") / "data"
    synthesize(root, categories=["weave", "disc"], size=32, n_train=4, n_test=4)
    return root


def test_train_gains_the_ray_options_and_keeps_its_own() -> None:
    result = CliRunner().invoke(_app(), ["train", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for option in (
        "--all-categories",
        "--categories",
        "--address",
        "--workers-per-run",
        "--cpus-per-worker",
        "--gpus-per-worker",
        "--category",
        "--resume",
    ):
        assert option in result.output
    for former in ("--workers-per-category", "--cpus-per-category", "--gpus-per-category"):
        assert former not in result.output  # still accepted for one release, hidden


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        ([], ConfigError, "missing --category"),
        (["--category", "weave", "--all-categories"], ConfigError, "not both"),
        (["--categories", "weave,nope"], DataError, "nope"),
        (["--categories", " , "], ConfigError, "--categories is empty"),
        (["--all-categories", "--workers-per-run", "0"], ConfigError, "workers per run must be >= 1"),
        (
            ["--all-categories", "--workers-per-run", "2", "--gpus-per-worker", "0.5", "--no-tracking"],
            ConfigError,
            "NCCL",
        ),
        (["--all-categories", "--cpus-per-worker", "0"], ConfigError, "cpus per worker must be > 0"),
        (["--all-categories", "--cpus-per-category", "0"], ConfigError, "cpus per worker must be > 0"),  # former name
        (
            ["--all-categories", "--cpus-per-worker", "1", "--cpus-per-category", "2"],
            ConfigError,
            "--cpus-per-worker and --cpus-per-category name one setting",
        ),
        (["--all-categories", "--resume"], ConfigError, "--resume is for one category"),
    ],
)
def test_bad_multi_category_requests_fail_with_one_clear_error(
    data: Path, args: list[str], error: type, text: str
) -> None:
    base = ["train", "--data", str(data), "--model", "rd", "--preset", "cpu-smoke"]
    result = CliRunner().invoke(_app(), base + args)
    assert isinstance(result.exception, error), result.output
    assert text in str(result.exception)


def test_several_workers_per_category_need_a_data_parallel_engine() -> None:
    from adkd.platform.cluster.resources import CategoryResources, check_distributed

    two = CategoryResources(workers=2, cpus=0.5)
    check_distributed(two, None)  # the default engine averages gradients over the workers
    check_distributed(two, "adkd.pipelines.train.engine:train_category")
    with pytest.raises(ConfigError, match="does not do data-parallel training"):
        check_distributed(two, "adkd.pipelines.train.checkpoint:save_checkpoint")  # no SUPPORTS_DISTRIBUTED
    check_distributed(CategoryResources(workers=1), "adkd.pipelines.train.checkpoint:save_checkpoint")
    help_text = CliRunner().invoke(_app(), ["train", "--help"], env={"COLUMNS": "300"}).output
    assert "batch_size is per worker" in " ".join(help_text.split())


def test_categories_are_discovered_or_checked(data: Path) -> None:
    from adkd.platform.storage.data_roots import list_categories

    assert list_categories(str(data), None) == ["disc", "weave"]
    assert list_categories(str(data), ["weave"]) == ["weave"]


def test_submit_entrypoint_runtime_env_and_secret_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    from adkd.platform.cluster import jobs

    cmd = jobs.entrypoint_for(["train", "--all-categories", "--data", "/d ata"])
    assert shlex.split(cmd) == ["python", "-m", "adkd.cli.main", "train", "--all-categories", "--data", "/d ata"]
    with pytest.raises(ConfigError, match="cannot run as a job"):
        jobs.entrypoint_for(["submit", "--", "train"])
    with pytest.raises(ConfigError, match="nothing to submit"):
        jobs.entrypoint_for([])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.delenv("ADKD_RUNS_DIR", raising=False)
    env = jobs.build_runtime_env({"ADKD_RUNS_DIR": "/shared/runs"})
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "ADKD_RUNS_DIR": "/shared/runs"}
    assert Path(env["py_modules"][0]).name == "adkd" and (Path(env["py_modules"][0]) / "cli" / "main.py").is_file()
    assert jobs.parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        jobs.parse_env(["novalue"])
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY"):
        jobs.submit(["train"], address="http://127.0.0.1:9", env={"AWS_SECRET_ACCESS_KEY": "s"})


def test_results_markdown_and_json(tmp_path: Path) -> None:
    from adkd.platform.cluster.results import ResultRow, write_results

    rows = [
        ResultRow("bottle", "rd", "FINISHED", {"test/image_auroc": 0.9912, "test/pixel_auroc": 0.985}, 2.25, "3"),
        ResultRow("cable", "rd", "FAILED", {}, 0.1, None, error="data validation failed: 1 mask missing"),
    ]
    md, js = write_results(tmp_path, rows, {"run_id": "x"})
    lines = md.read_text().splitlines()
    # no category has AUPRO: the column is absent, not "-" or 0
    assert lines[2] == "| bottle | rd | FINISHED | 99.1 | 98.5 | 2.2 | 3 |"
    assert lines[3] == "| cable | rd | FAILED | - | - | 0.1 | - |"
    assert lines[4] == "| **mean** | | | 99.1 | 98.5 | | |"
    assert lines[-1] == "- **cable** failed: data validation failed: 1 mask missing"
    payload = json.loads(js.read_text())
    assert payload["run_id"] == "x" and payload["categories"][0]["registered_version"] == "3"


def test_image_level_results_show_the_mean_beside_the_paper() -> None:
    from adkd.platform.cluster.results import ResultRow, results_markdown

    rows = [
        ResultRow("cat", "mrkd", "FINISHED", {"test/image_auroc": 0.80, "test/f1_max": 0.5}, 1.0, None),
        ResultRow("ship", "mrkd", "FINISHED", {"test/image_auroc": 0.90}, 1.0, None),
    ]
    reference = {"label": "paper (masked RD, Table 2)", "test/image_auroc": 0.909}
    lines = results_markdown(rows, reference).splitlines()
    assert lines[0] == "| category | model | status | image AUROC | minutes | version |"  # no pixel columns
    assert lines[-2:] == ["| **mean** | | | 85.0 | | |", "| paper (masked RD, Table 2) | | | 90.9 | | |"]


def test_live_board_tracks_epochs_restarts_and_eta() -> None:
    from adkd.cli.live_board import ProgressBoard

    board = ProgressBoard(["a", "b"])
    board.on_start("a", attempt=1, epochs=4)
    board.rows["a"].last_epoch_at -= 10.0  # an epoch that took 10 s
    board.on_epoch("a", 1, {"train/loss": 0.5})
    assert board.rows["a"].eta_s() == pytest.approx(30.0, abs=0.5)
    board.on_start("a", attempt=2)
    assert board.rows["a"].state == "RESTARTED" and board.rows["a"].attempts == 2
    board.on_end("a", "FINISHED")
    assert board.rows["a"].eta_s() is None and board.rows["b"].state == "PENDING"
    assert board.render().row_count == 2
