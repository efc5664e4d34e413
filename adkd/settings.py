"""Settings: defaults < config file (`adkd.toml` or `--config`) < environment < flags.

The one place adkd reads its environment. A command loads ``Settings`` once and passes it down;
the few knobs that code below the platform needs in any process (a Ray worker included) have a
function of their own here (``downloads_allowed``, ``decode_workers_override``). Modules that build a
child process's environment copy ``os.environ`` and say so where they do.
"""

from __future__ import annotations

import os
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from adkd.errors import ConfigError

DEFAULT_RUNS_DIR = "adkd-runs"
CONFIG_FILE_NAME = "adkd.toml"
DEFAULT_MODEL_NAME = "adkd-{category}"
MODEL_NAME_FIELDS = ("category", "model", "dataset", "backbone", "preset")

# Environment variable -> settings field. Standard names first, then ADKD_*.
ENV_VARS = {
    "MLFLOW_TRACKING_URI": "tracking_uri",
    "MLFLOW_EXPERIMENT_NAME": "experiment",  # MLflow's own variable; ADKD_EXPERIMENT (later) wins over it
    "RAY_ADDRESS": "ray_address",
    "MLFLOW_S3_ENDPOINT_URL": "s3_endpoint_url",
    "AWS_ENDPOINT_URL": "s3_endpoint_url",
    "ADKD_RUNS_DIR": "runs_dir",
    "ADKD_TRACKING_URI": "tracking_uri",
    "ADKD_RAY_ADDRESS": "ray_address",
    "ADKD_S3_ENDPOINT_URL": "s3_endpoint_url",
    "ADKD_CACHE_DIR": "cache_dir",
    "ADKD_EXPERIMENT": "experiment",
    "ADKD_REGISTERED_MODEL_NAME": "registered_model_name",
    "ADKD_TRACKING": "tracking",
    "ADKD_REGISTER": "register_models",
    "ADKD_USER": "user",
    "ADKD_OFFLINE": "offline",
    "ADKD_RUNTIME": "runtime",
    "AWS_DEFAULT_REGION": "aws_region",
    "AWS_REGION": "aws_region",
    "RAY_API_SERVER_ADDRESS": "ray_jobs_address",
}
# Environment variable -> (settings table, key): the station's and the monitor's own settings.
SECTION_ENV_VARS = {
    "ADKD_STATION_TOKEN": ("station", "token"),
    "ADKD_STATION_DB_URL": ("station", "db_url"),
    "ADKD_STATION_STORE": ("station", "store"),
}
OFFLINE_ENV = "ADKD_OFFLINE"
DECODE_WORKERS_ENV = "ADKD_DECODE_WORKERS"
GATE_MEMO_ENV = "ADKD_GATE_MEMO"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "adkd"


class StationSettings(BaseModel):
    """``[station]``: the inspection station (``adkd station``) and its verdict log."""

    model_config = ConfigDict(extra="forbid")

    db_url: str | None = Field(
        default=None, description="Verdict database (SQLAlchemy URL); None = SQLite adkd-runs/station.db."
    )
    store: str | None = Field(
        default=None, description="Where kept images go: a folder or s3://bucket/prefix; None = adkd-runs/station."
    )
    keep_passed: float = Field(default=0.05, ge=0, le=1, description="Share of passed images kept (flagged: all).")
    max_upload_mb: float = Field(default=20.0, gt=0, description="Largest accepted image file.")
    max_files: int = Field(default=64, ge=1, description="Most images in one upload.")
    token: SecretStr | None = Field(
        default=None, description="Access token; required for a non-loopback --host (ADKD_STATION_TOKEN)."
    )
    refresh_s: float = Field(default=60.0, ge=0, description="How often the served aliases are re-resolved.")


class MonitorSettings(BaseModel):
    """``[monitor]``: the window and the bounds of ``adkd monitor`` (a crossed bound exits non-zero)."""

    model_config = ConfigDict(extra="forbid")

    window_hours: float = Field(default=168.0, gt=0, description="Recent verdicts: those of the last N hours.")
    min_verdicts: int = Field(default=20, ge=1, description="Fewer recent verdicts: reported, bounds not checked.")
    ks_pvalue_min: float = Field(default=0.01, gt=0, lt=1, description="Two-sample KS p-value below it: drift.")
    psi_max: float = Field(default=0.25, gt=0, description="Population stability index above it: drift.")
    flag_rate_pvalue_min: float = Field(
        default=0.001, gt=0, lt=1, description="Binomial p-value of the flag rate vs the expected rate below it."
    )
    min_feedback: int = Field(default=5, ge=1, description="Confirmed verdicts needed before FP/FN rates count.")
    false_alarm_rate_max: float = Field(default=0.5, ge=0, le=1, description="Flagged, confirmed wrong.")
    miss_rate_max: float = Field(default=0.2, ge=0, le=1, description="Passed, confirmed wrong.")
    latency_p99_ms_max: float = Field(default=2000.0, gt=0, description="Per-image latency p99 above it.")


class Settings(BaseModel):
    """Where adkd writes and which services it talks to. Secrets never live here (the station token is a SecretStr).

    Other top-level keys of a settings file are kept in ``training_keys`` (a TOML ``--config`` may hold
    training settings beside the tracking URI); the run that reads the file decides what they mean.
    """

    model_config = ConfigDict(extra="allow")

    runs_dir: Path = Field(default=Path(DEFAULT_RUNS_DIR), description="Local run folders and the embedded store.")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; None = embedded SQLite.")
    artifact_location: str | None = Field(default=None, description="Artifact root for new experiments.")
    ray_address: str | None = Field(default=None, description="Ray cluster address; None = local Ray.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, moto).")
    cache_dir: Path = Field(default=DEFAULT_CACHE_DIR, description="Synced data sets.")
    experiment: str | None = Field(default=None, description="MLflow experiment name; None = data set name.")
    tracking: bool = Field(default=True, description="Write MLflow runs (ADKD_TRACKING=off: none at all).")
    register_models: bool = Field(default=True, description="Register a model version per finished category.")
    user: str | None = Field(default=None, description="Who promotes a model (audit trail); None = login name.")
    offline: bool = Field(default=False, description="Never download weights (only caches are tried).")
    aws_region: str = Field(default="us-east-1", description="Region for S3 run storage.")
    ray_jobs_address: str | None = Field(default=None, description="Ray Jobs API address (dashboard).")
    promotion_metric: str = "image_auroc"
    registered_model_name: str = Field(
        default=DEFAULT_MODEL_NAME,
        description="Registered-model name template: fields {category}, {model}, {dataset}, {backbone}, {preset}.",
    )
    runtime: str = Field(default="auto", description="Inference runtime (auto = the one recorded at export).")
    train: dict[str, Any] = Field(default_factory=dict, description="[train] table: training overrides.")
    tune: dict[str, Any] = Field(default_factory=dict, description="[tune] table: search space and options.")
    station: StationSettings = Field(default_factory=StationSettings, description="[station] table.")
    monitor: MonitorSettings = Field(default_factory=MonitorSettings, description="[monitor] table.")

    @field_validator("registered_model_name")
    @classmethod
    def _name_template(cls, value: str) -> str:
        check_name_template(value)
        return value

    @property
    def training_keys(self) -> dict[str, Any]:
        """The file's top-level keys that are not settings (training settings outside a ``[train]`` table)."""
        return dict(self.model_extra or {})

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.runs_dir / 'mlflow.db').resolve()}"

    @property
    def resolved_artifact_location(self) -> str:
        if self.artifact_location:
            return self.artifact_location
        return (self.runs_dir / "artifacts").resolve().as_uri()


def check_name_template(template: str) -> None:
    """A registered-model name template uses only known fields and holds {category} (one model per category)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        hint = "write e.g. adkd-{category}-{dataset}"
        raise ValueError(f"{template!r} is not a valid template ({exc}); {hint}") from None
    unknown = [f for f in fields if f not in MODEL_NAME_FIELDS]
    if unknown or "category" not in fields:
        raise ValueError(
            f"{template!r} may use only {', '.join('{' + f + '}' for f in MODEL_NAME_FIELDS)} and must hold "
            "{category}; write e.g. adkd-{category}-{dataset}"
        )


def _read_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        default = Path.cwd() / CONFIG_FILE_NAME
        if not default.is_file():
            return {}
        path = default
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing TOML file to --config")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return data.get("adkd", data)


def _from_env() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, field_name in ENV_VARS.items():
        value = os.environ.get(var)
        if value:
            out[field_name] = value
    return out


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def downloads_allowed() -> bool:
    """False under ``ADKD_OFFLINE=1``: weights come from caches only (read in every process, workers too)."""
    return not _flag(os.environ.get(OFFLINE_ENV, ""))


def decode_workers_override() -> int | None:
    """``ADKD_DECODE_WORKERS``: threads for image decoding, or None for the default."""
    value = os.environ.get(DECODE_WORKERS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{DECODE_WORKERS_ENV}={value!r} is invalid: use a positive integer, e.g. 4")
    return int(value)


def openmp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer (Ray sets it to each worker's CPUs), else None.

    torch reads it itself; adkd reads it to hold ONNX Runtime and OpenVINO, which do not, to the same budget.
    Anything else (unset, empty, not a positive integer) is left to the runtimes' defaults, as torch does.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def gate_memo_dir() -> Path | None:
    """Where the data gate remembers GX's results (read in every process, Ray workers too).

    ``ADKD_GATE_MEMO``: unset or ``on`` = ``ADKD_CACHE_DIR``/data-gate; ``off`` = no memory; an absolute folder =
    that folder, which several caches can share (nodes with caches of their own on one shared disk).
    """
    value = os.environ.get(GATE_MEMO_ENV, "").strip()
    if value.lower() in ("0", "off", "false", "no"):
        return None
    if not value or _flag(value):
        return cache_root() / "data-gate"
    folder = Path(value).expanduser()
    if not folder.is_absolute():
        # Each process (a Ray worker, a subprocess) would read a relative folder against its own working directory.
        raise ConfigError(f"{GATE_MEMO_ENV}={value!r}: give on, off or an absolute folder (e.g. $PWD/{value})")
    return folder


def cache_root() -> Path:
    """``ADKD_CACHE_DIR``, else ~/.cache/adkd, read afresh (Ray workers and subprocesses get it by environment)."""
    root = os.environ.get("ADKD_CACHE_DIR", "").strip()
    return Path(root).expanduser() if root else DEFAULT_CACHE_DIR


# MLflow 3's server also starts a job runner and seven huey consumer processes for its own GenAI jobs (LLM-judge
# scorers, prompt optimisation, trace roll-ups), which adkd never submits. On 2 cores a start took 29.1 CPU-s and
# 11.3 s to /health with them, 13.1 CPU-s and 8.0 s without (benchmarks/mlflow_server_start.py, RESULTS.md). A user
# who wants them sets the variable to true.
MLFLOW_JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def mlflow_server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an `mlflow server` / `mlflow ui` adkd starts: ``base`` (default this process's) with
    MLflow's job runner off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set there."""
    env = dict(os.environ if base is None else base)
    env.setdefault(MLFLOW_JOB_EXECUTION_ENV, "false")
    return env


def ray_auth_mode_chosen() -> bool:
    """``RAY_AUTH_MODE`` is set: the user chose Ray's authentication, adkd leaves it alone."""
    return bool(os.environ.get("RAY_AUTH_MODE"))


def inside_ray_job() -> bool:
    """This process is the entrypoint of a Ray job (``adkd submit``): its runtime_env already ships adkd."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Merge defaults, the config file, the environment and explicit flags (None flags are ignored)."""
    merged: dict[str, Any] = {}
    merged.update(_read_config_file(config_file))
    merged.update(_from_env())
    for var, (section, key) in SECTION_ENV_VARS.items():
        value = os.environ.get(var)
        if value:
            merged[section] = {**(merged.get(section) or {}), key: value}
    merged.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = f"setting '{where}': {first['msg']} (check --config, the environment or flags)"
        raise ConfigError(msg) from None
