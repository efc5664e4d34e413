"""A new SQLite tracking store starts from a cached copy of MLflow's schema instead of migrating an empty file.

MLflow builds a new SQLite store by running its whole Alembic history (about 60 migrations, most of them SQLite
table rebuilds): 2 CPU-s on a 2-core EPYC for every new ``adkd-runs/mlflow.db``, in every fresh folder, test or
CI run. The schema depends only on the MLflow and SQLAlchemy versions, so it is built once per pair, by MLflow's
own initialisation, under the cache folder, and copied into place. The copy holds tables and Alembic's
revision only: MLflow still creates the Default experiment itself when it opens the store (its artifact location
follows the working folder, so it cannot be cached), and checks the revision against its own as for any store.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///path`` URI; None for other stores and in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def schema_template(cache_dir: Path) -> Path | None:
    """The empty store of the installed MLflow and SQLAlchemy under ``cache_dir``, built when missing; None
    when this MLflow no longer has the initialisation it is built with."""
    import mlflow
    import sqlalchemy

    try:
        from mlflow.store.db.utils import _initialize_tables
    except ImportError:
        return None
    template = cache_dir / "mlflow-schema" / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=template.parent, suffix=".building")
    os.close(fd)
    engine = sqlalchemy.create_engine(f"sqlite:///{scratch}")
    try:
        _initialize_tables(engine)
    except BaseException:
        Path(scratch).unlink()
        raise
    finally:
        engine.dispose()
    os.replace(scratch, template)  # whole or absent, also when two processes build it at once
    return template


def seed_new_store(uri: str, cache_dir: Path) -> bool:
    """Give the SQLite store at ``uri`` MLflow's schema from the cached template when its file does not exist
    yet; True when it was seeded. Other stores, an existing file, or any trouble with the cache: MLflow
    initialises the store itself, as it would without adkd (the same schema, only slower)."""
    target = sqlite_file(uri)
    if target is None or target.exists():
        return False
    try:
        template = schema_template(cache_dir)
    except Exception as exc:  # the cache only saves time: MLflow's own init reports real trouble
        log.debug("MLflow initialises %s itself (schema template not built: %s)", target, exc)
        return False
    if template is None:
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".seeding")
        os.close(fd)
        try:
            shutil.copyfile(template, scratch)
            Path(target).hardlink_to(scratch)  # fails when another process created the store meanwhile: theirs stays
        finally:
            Path(scratch).unlink()
    except OSError as exc:
        log.debug("MLflow initialises %s itself (schema cache unusable: %s)", target, exc)
        return False
    return True
