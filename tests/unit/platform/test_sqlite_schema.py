"""A new SQLite store seeded from the cached schema is the store MLflow would have built itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adkd.platform.tracking.client import client_for
from adkd.platform.tracking.sqlite_schema import seed_new_store, sqlite_file


def _schema(db: Path) -> tuple[dict[str, list[str]], list[tuple[str]]]:
    """Each table's and index's definition as its sorted lines (MLflow's own table rebuilds emit a table's
    constraints in varying order from one build to the next), and Alembic's revision."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return {name: sorted(line.strip(" ,\t") for line in sql.splitlines()) for name, sql in rows}, revision


def test_a_seeded_store_has_mlflows_own_schema_and_its_own_default_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own" / "mlflow.db"
    MlflowClient(f"sqlite:///{own}").search_experiments()  # MLflow migrates an empty file itself
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    seeded = tmp_path / "runs" / "mlflow.db"
    client = client_for("sqlite:///runs/mlflow.db")  # a relative path, as the embedded store's default is
    assert seeded.is_file() and list((tmp_path / "cache" / "mlflow-schema").glob("mlflow-*-sqlalchemy-*.db"))
    assert _schema(seeded) == _schema(own)
    # The Default experiment is MLflow's, made on opening: its artifact location follows this working folder.
    (default,) = client.search_experiments()
    assert default.name == "Default" and default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run, "m", 1.0)
    assert client.get_run(run).data.metrics == {"m": 1.0}


def test_only_a_new_sqlite_file_is_seeded(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"")
    assert not seed_new_store(f"sqlite:///{existing}", cache) and existing.read_bytes() == b""
    assert not seed_new_store("http://127.0.0.1:5000", cache) and not cache.exists()
    assert sqlite_file("sqlite:///:memory:") is None and sqlite_file("postgresql://u@h/db") is None
    assert sqlite_file("sqlite:////abs/m.db?mode=rwc") == Path("/abs/m.db")
    assert seed_new_store(f"sqlite:///{tmp_path / 'new' / 'm.db'}", cache)
    assert not list((tmp_path / "new").glob(".*seeding"))  # no scratch copy left behind
