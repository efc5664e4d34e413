"""The verdict log: one row per inspected image, the operator's feedback beside it, the served models' references.

A real database through SQLAlchemy: SQLite in ``adkd-runs/station.db`` by default, PostgreSQL (psycopg) when
``station.db_url`` / ``ADKD_STATION_DB_URL`` names one. Times are stored as naive UTC. Tables are created on
first use; a row is written in one transaction, so a failed insert leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from adkd.errors import ConfigError, DataError, ServiceError, first_line
from adkd.platform.monitoring.monitor import utcnow
from adkd.platform.tracking.redaction import redact_uri

DB_FILE = "station.db"
VERDICTS = ("anomalous", "normal")

metadata = MetaData()

models_table = Table(
    "station_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", String(32), nullable=False),
    Column("category", String(200), nullable=False),
    Column("family", String(64)),
    Column("preset", String(64)),
    Column("threshold", Float),
    Column("quantile", Float),
    Column("normal_source", String(64)),
    Column("normal_scores", JSON),
    Column("metrics", JSON),
    Column("run_id", String(64)),
    Column("first_served", DateTime, nullable=False),
    UniqueConstraint("name", "version", name="uq_station_model_version"),
)

verdicts_table = Table(
    "station_verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime, nullable=False, index=True),
    Column("category", String(200), nullable=False, index=True),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("image_sha256", String(64), nullable=False, index=True),
    Column("score", Float, nullable=False),
    Column("normalized_score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("source", String(64), nullable=False),
    Column("width", Integer),
    Column("height", Integer),
    Column("image_key", String(300)),
    Column("overlay_key", String(300)),
)

feedback_table = Table(
    "station_feedback",
    metadata,
    Column("verdict_id", Integer, ForeignKey("station_verdicts.id"), primary_key=True),
    Column("correct", Boolean, nullable=False),
    Column("defect_type", String(64)),
    Column("created_at", DateTime, nullable=False),
)


@dataclass
class VerdictRecord:
    """What one inspection writes."""

    category: str
    model_name: str
    model_version: str
    image_sha256: str
    score: float
    normalized_score: float
    threshold: float
    verdict: str
    latency_ms: float
    source: str
    width: int | None = None
    height: int | None = None
    image_key: str | None = None
    overlay_key: str | None = None
    created_at: datetime | None = None


def default_url(runs_dir: Path) -> str:
    return f"sqlite:///{(Path(runs_dir) / DB_FILE).resolve()}"


def _engine_url(url: str) -> str:
    # SQLAlchemy's default PostgreSQL driver is psycopg2; adkd installs psycopg (3).
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (adkd monitor) never block the station's writes
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class VerdictLog:
    """The station's database: verdicts, feedback and the served models' monitoring references."""

    def __init__(self, url: str, create: bool = True) -> None:
        """``create=False`` (readers: ``adkd monitor``, the feedback import): a missing SQLite file is an error."""
        self.url = url
        shown = redact_uri(url)
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not create and not path.is_file():
                raise DataError(
                    f"there is no station database at {path}; inspect images with `adkd station` first "
                    "(or point station.db_url / ADKD_STATION_DB_URL at the station's)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            self.engine: Engine = create_engine(_engine_url(url), **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(
                f"station database URL {shown} is not usable ({exc.__class__.__name__}: {exc}); "
                "set station.db_url / ADKD_STATION_DB_URL to sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
            ) from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ServiceError(
                f"cannot open the station database {shown} ({first_line(exc)}); "
                "check that the server runs and station.db_url / ADKD_STATION_DB_URL"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    # -- writes
    def add_verdict(self, record: VerdictRecord) -> int:
        """Insert one verdict (one transaction); returns its id."""
        row = asdict(record)
        row["created_at"] = row["created_at"] or utcnow()
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"verdict {row['verdict']!r} is not one of {VERDICTS}")
        with self.engine.begin() as conn:
            return int(conn.execute(verdicts_table.insert().values(**row)).inserted_primary_key[0])

    def set_image_keys(self, verdict_id: int, image_key: str, overlay_key: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                verdicts_table.update()
                .where(verdicts_table.c.id == verdict_id)
                .values(image_key=image_key, overlay_key=overlay_key)
            )

    def set_feedback(self, verdict_id: int, correct: bool, defect_type: str | None) -> None:
        """The operator's word on a verdict; a later word replaces an earlier one."""
        with self.engine.begin() as conn:
            found = conn.execute(select(verdicts_table.c.id).where(verdicts_table.c.id == verdict_id)).first()
            if found is None:
                raise KeyError(verdict_id)
            conn.execute(feedback_table.delete().where(feedback_table.c.verdict_id == verdict_id))
            conn.execute(
                feedback_table.insert().values(
                    verdict_id=verdict_id, correct=correct, defect_type=defect_type, created_at=utcnow()
                )
            )

    def record_model(self, entry: dict[str, Any]) -> None:
        """Remember a served version's threshold, validation normals and metrics (first time it is served)."""
        with self.engine.begin() as conn:
            known = conn.execute(
                select(models_table.c.id).where(
                    (models_table.c.name == entry["name"]) & (models_table.c.version == entry["version"])
                )
            ).first()
            if known is None:
                conn.execute(models_table.insert().values(**entry, first_served=utcnow()))

    # -- reads
    def _joined(self) -> Any:
        v, f = verdicts_table, feedback_table
        return select(v, f.c.correct, f.c.defect_type, f.c.created_at.label("feedback_at")).select_from(
            v.outerjoin(f, f.c.verdict_id == v.c.id)
        )

    def verdict(self, verdict_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._joined().where(verdicts_table.c.id == verdict_id)).mappings().first()
        return dict(row) if row else None

    def recent(self, category: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest verdicts (newest first), with their feedback."""
        query = self._joined().order_by(verdicts_table.c.id.desc()).limit(limit)
        if category:
            query = query.where(verdicts_table.c.category == category)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def verdicts(self, category: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every verdict of ``category`` since ``since`` (oldest first), with its feedback."""
        query = self._joined().where(verdicts_table.c.category == category).order_by(verdicts_table.c.id)
        if since is not None:
            query = query.where(verdicts_table.c.created_at >= since)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def seen(self, category: str, image_sha256: str, source: str) -> bool:
        """Whether ``source`` already inspected this exact file for ``category``."""
        v = verdicts_table
        query = select(v.c.id).where(
            (v.c.category == category) & (v.c.image_sha256 == image_sha256) & (v.c.source == source)
        )
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def model(self, name: str, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(models_table).where((models_table.c.name == name) & (models_table.c.version == version))
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def counts(self) -> dict[str, dict[str, int]]:
        """Per category: verdicts, flagged, with feedback, marked wrong."""
        v, f = verdicts_table, feedback_table
        query = (
            select(
                v.c.category,
                func.count(v.c.id),
                func.sum((v.c.verdict == "anomalous").cast(Integer)),
                func.count(f.c.verdict_id),
                func.sum((f.c.correct == False).cast(Integer)),  # noqa: E712 (SQL expression)
            )
            .select_from(v.outerjoin(f, f.c.verdict_id == v.c.id))
            .group_by(v.c.category)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            r[0]: {"verdicts": int(r[1]), "flagged": int(r[2] or 0), "feedback": int(r[3]), "wrong": int(r[4] or 0)}
            for r in rows
        }
