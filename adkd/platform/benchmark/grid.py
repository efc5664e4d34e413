"""Benchmark grids: what `adkd benchmark GRID` trains, read from a YAML/TOML file or a grid shipped with adkd.

A grid names a data root, categories, models, a preset and a list of rows (setting variations, each a label
and ``--set``-style dotted keys), optionally with the paper's numbers per row. Every (row, category) becomes
one training job with its own resolved ``TrainConfig``; a job that cannot run (no data for the category,
no weights file) is kept with the reason instead, so the report can say why.

    name = "my-grid"
    data = "datasets/mvtec"          # --data overrides it
    categories = ["bottle", "cable"]
    models = ["mrkd"]                # rows without a model run once per model
    preset = "paper"
    metric = "image_auroc"           # which row is best per category (ties: aupro)

    [[rows]]
    label = "lambda 0.5"
    set = ["model_options.mask_rate=0.5"]
    paper = { mean = { image_auroc = 99.1 }, bottle = { image_auroc = 100.0 } }   # percent
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adkd.errors import ConfigError, parse_error_line
from adkd.models.checks import weights_file_problem
from adkd.pipelines.evaluate.metric_names import QUALITY_METRICS
from adkd.pipelines.train.config import TrainConfig
from adkd.settings import downloads_allowed

GRIDS_PACKAGE = "adkd.benchmark_grids"
METRICS = QUALITY_METRICS
PAPER_FIELDS = ("backbone", "image_size", "epochs", "weights")  # the settings a report compares with the paper


class GridRow(BaseModel):
    """One setting variation: a label, the ``--set`` keys, and the paper's numbers for it (percent)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1)
    model: str | None = None
    preset: str | None = None
    set: list[str] = Field(default_factory=list)
    paper: dict[str, dict[Literal["image_auroc", "pixel_auroc", "aupro"], float]] = Field(default_factory=dict)

    @field_validator("set")
    @classmethod
    def _key_value(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or not item.partition("=")[0].strip():
                raise ValueError(f"'{item}' is not key=value (write e.g. 'optimizer.lr=0.001')")
        return value


class Grid(BaseModel):
    """A benchmark grid file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    title: str = ""
    description: str = ""
    paper_source: str = ""
    paper_notes: str = ""
    data: str | None = None
    categories: list[str] = Field(min_length=1)
    models: list[str] = Field(default_factory=list)
    preset: str = "paper"
    metric: Literal["image_auroc", "pixel_auroc", "aupro"] = "image_auroc"
    set: list[str] = Field(default_factory=list)
    rows: list[GridRow] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique_categories(cls, value: list[str]) -> list[str]:
        dupes = sorted({c for c in value if value.count(c) > 1})
        if dupes:
            raise ValueError(f"listed twice: {', '.join(dupes)}")
        return value


@dataclass
class Job:
    """One (row, category): the config to train, or why it cannot run."""

    key: str  # unique, path-safe: the Ray run and the MLflow child's key
    row: str
    category: str
    config: TrainConfig | None
    reason: str | None = None  # set when the job is not run
    paper_config: dict[str, Any] = field(default_factory=dict)  # PAPER_FIELDS before command-line overrides

    @property
    def runnable(self) -> bool:
        return self.config is not None and self.reason is None


@dataclass
class Overrides:
    """Command-line settings that scale a grid down; None = the grid's own."""

    data: str | None = None
    categories: list[str] | None = None
    epochs: int | None = None
    image_size: int | None = None
    backbone: str | None = None
    weights: str | None = None
    sets: list[str] = field(default_factory=list)

    def as_sets(self, config: dict[str, Any]) -> list[str]:
        """The ``key=value`` settings these overrides add to a job resolved as ``config``."""
        out = []
        if self.epochs is not None:
            out.append(f"epochs={self.epochs}")
            options = config.get("model_options") or {}
            for phase in ("ae_pretrain_epochs", "ae_freeze_epochs"):  # a scaled-down stfpm-ae scales every phase
                if (options.get(phase) or 0) > self.epochs:
                    out.append(f"model_options.{phase}={self.epochs}")
        if self.image_size is not None:
            out.append(f"image_size={self.image_size}")
            if config.get("crop_size") and config["crop_size"] > self.image_size:
                out.append("crop_size=null")
        if self.backbone is not None:
            out.append(f"backbone={self.backbone}")
        if self.weights is not None:
            out.append(f"weights={self.weights}")
        return out + list(self.sets)


# ----------------------------------------------------------------------------------------------- loading


def shipped_grids() -> dict[str, Path]:
    """The grids that ship with adkd: name → file."""
    root = resources.files(GRIDS_PACKAGE)
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith((".toml", ".yaml", ".yml")):
            out[Path(entry.name).stem] = Path(str(entry))
    return dict(sorted(out.items()))


def grid_path(spec: str) -> Path:
    """A grid file path, or the file of a shipped grid named ``spec``."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_grids()
    if spec in shipped:
        return shipped[spec]
    raise ConfigError(
        f"grid {spec!r} is neither a file nor a shipped grid; shipped grids: {', '.join(shipped)} "
        "(`adkd benchmark --list`)"
    )


def _read(path: Path) -> Any:
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"grid {path} cannot be parsed: {parse_error_line(exc)}") from None


def _where(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """``rows.1.set`` → ``rows[1] ('baseline').set``: the key a user can find in the file."""
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            label = node[part].get("label") if isinstance(node, list) and isinstance(node[part], dict) else None
            out += f"[{part}]" + (f" ({label!r})" if label else "")
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "grid"


def load_grid(spec: str) -> Grid:
    """Read and check a grid; any problem is one ConfigError line naming the file and the key."""
    path = grid_path(spec)
    data = _read(path)
    if not isinstance(data, dict):
        raise ConfigError(f"grid {path} must be a mapping of keys (name, categories, rows, ...)")
    try:
        return Grid.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _where(tuple(err["loc"]), data)
        if err["type"] == "extra_forbidden":
            known = ", ".join(GridRow.model_fields if ".rows[" in f".{where}" else Grid.model_fields)
            msg = f"unknown key '{where}' (known keys: {known})"
        elif err["type"] == "missing":
            msg = f"missing key '{where}'"
        else:
            msg = f"key '{where}': {err['msg'].removeprefix('Value error, ')}"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"grid {path}: {msg}{more}") from None


def grid_summary(grid: Grid) -> str:
    """One line for `adkd benchmark --list`."""
    models = sorted({r.model for r in grid.rows if r.model} | set(grid.models))
    return f"{grid.title or grid.name} ({len(grid.rows)} rows x {len(grid.categories)} categories; {', '.join(models)})"


# ----------------------------------------------------------------------------------------------- jobs


@dataclass
class ExpandedRow:
    """A grid row for one model: the label shown in the report and the paper's numbers."""

    label: str
    model: str
    preset: str
    sets: list[str]
    paper: dict[str, dict[str, float]]


def expand_rows(grid: Grid) -> list[ExpandedRow]:
    """Rows with a model run once; rows without one run once per grid model (label 'model label')."""
    out = []
    for row in grid.rows:
        models = [row.model] if row.model else grid.models
        if not models:
            raise ConfigError(f"grid {grid.name}: row {row.label!r} names no model and the grid has no 'models'")
        for model in models:
            label = row.label if len(models) == 1 else f"{model} {row.label}"
            out.append(ExpandedRow(label, model, row.preset or grid.preset, [*grid.set, *row.set], row.paper))
    labels = [r.label for r in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"grid {grid.name}: row label listed twice: {', '.join(dupes)}; give each row its own label")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "row"


def _resolve(
    row: ExpandedRow, category: str, data: str, sets: list[str], defaults: dict[str, Any], train: dict[str, Any]
) -> TrainConfig:
    from adkd.pipelines.train.presets import resolve_config

    return resolve_config(
        row.model, row.preset, category=category, data=data, overrides=sets, defaults=defaults, settings=train
    )


def _missing_reason(config: TrainConfig, local: bool = True) -> str | None:
    """Why a job cannot start on this machine's view of the data and weights, or None.

    ``local``: the runs train here (embedded Ray), so this machine's weight cache decides for ImageNet
    weights when downloads are off (``ADKD_OFFLINE``); a cluster's nodes have their own caches.
    """
    if "://" not in config.data:
        root = Path(config.data).expanduser()
        if not root.is_dir():
            return f"no data: data root {root} does not exist"
        if not (root / config.category).is_dir():
            return f"no data: category {config.category!r} not found under {root}"
    problem = None if "://" in config.weights else weights_file_problem(config.weights)
    if problem:
        return f"no weights: {problem}"
    if local and config.weights == "imagenet" and not downloads_allowed():
        from adkd.models.backbones import hub_checkpoint_dir, imagenet_weights_file
        from adkd.models.zoo import MODEL_ZOO

        backbone = config.backbone or MODEL_ZOO[config.model].default_backbone
        cached = hub_checkpoint_dir() / imagenet_weights_file(backbone)
        if not cached.is_file():
            return f"no weights: ImageNet weights for {backbone} are not cached ({cached}) and ADKD_OFFLINE is set"
    return None


def build_jobs(
    grid: Grid,
    overrides: Overrides,
    *,
    settings_train: dict[str, Any] | None = None,
    out_dir: str = "adkd-runs",
    local: bool = True,
) -> tuple[list[ExpandedRow], list[str], list[Job]]:
    """Every (row, category) of ``grid`` with its resolved config, after the command-line overrides."""
    data = overrides.data or grid.data
    if not data:
        raise ConfigError(f"grid {grid.name} names no data root: pass --data ROOT")
    categories = overrides.categories or grid.categories
    rows = expand_rows(grid)
    defaults = {"out_dir": str(Path(out_dir) / "benchmark")}
    train = settings_train or {}
    jobs: list[Job] = []
    for row in rows:
        for category in categories:
            key = f"{_slug(row.label)}--{_slug(category)}"
            try:
                base = _resolve(row, category, data, row.sets, defaults, train)
                extra = overrides.as_sets(base.model_dump())
                config = _resolve(row, category, data, [*row.sets, *extra], defaults, train)
            except ConfigError as exc:
                raise ConfigError(f"grid {grid.name}, row {row.label!r}: {exc}") from None
            paper_config = {k: getattr(base, k) for k in PAPER_FIELDS}
            jobs.append(Job(key, row.label, category, config, _missing_reason(config, local), paper_config))
    return rows, categories, jobs


def deviations(jobs: list[Job]) -> list[str]:
    """Where the runs differ from the grid's (paper) settings because of command-line overrides."""
    out: dict[str, set[str]] = {}
    for job in jobs:
        if job.config is None:
            continue
        for name in PAPER_FIELDS:
            paper, ran = job.paper_config.get(name), getattr(job.config, name)
            if paper != ran:
                out.setdefault(name, set()).add(f"{_show(paper)} → {_show(ran)}")
    return [f"{name}: {', '.join(sorted(changes))}" for name, changes in out.items()]


def _show(value: Any) -> str:
    if value is None:
        return "model default"
    text = str(value)
    return Path(text).name if "/" in text else text
