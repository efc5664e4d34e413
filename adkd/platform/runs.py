"""One path for every training run: the CLI, the Python API, the demo, tuning and benchmarks train here.

A run resolves its settings and one config per category once, opens tracking, and trains one
category in this process (``train_one``) or many at once on Ray (``train_many``). The data root
stays what the user gave (tracking records it); it is made local where it is read: in this process,
or on the Ray worker that trains the category (``adkd.platform.storage.data_roots``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adkd.errors import ConfigError
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig, check_teacher_weights
from adkd.platform.storage.data_roots import check_category, list_categories, local_root
from adkd.settings import Settings, load_settings

if TYPE_CHECKING:
    from adkd.platform.cluster.driver import AllCategoriesResult
    from adkd.platform.cluster.listeners import RunListener


@dataclass
class RunRequest:
    """What the user asked for: one ``category`` in this process, or ``categories``/all of them on Ray."""

    model: str
    data: str
    category: str | None = None
    categories: list[str] | None = None
    all_categories: bool = False
    preset: str | None = "paper"
    overrides: list[str] = field(default_factory=list)
    config_file: Path | None = None
    out: Path | None = None
    skip_validation: bool = False
    tracking: bool = True
    resume: bool = False
    run_name: str | None = None  # the MLflow parent run's name (default <command>-<time>)

    @property
    def many(self) -> bool:
        return self.all_categories or self.categories is not None

    def check(self) -> None:
        """Contradictory or missing choices, before anything starts."""
        if self.many and self.category:
            raise ConfigError("pass either --category or --all-categories/--categories, not both")
        if not self.many and not self.category:
            raise ConfigError("missing --category: name one category, or train them all with --all-categories")
        if self.categories is not None and not self.categories:
            raise ConfigError("--categories is empty; write e.g. --categories bottle,cable")
        if self.many and self.resume:
            raise ConfigError(
                "--resume is for one category; --all-categories resumes crashed workers by itself (--max-failures)"
            )


@dataclass
class RayPlan:
    """How runs share the cluster: each run (a category, or a benchmark's row x category) trains on
    ``workers_per_run`` workers with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs each; restarts, storage.

    The CLI builds it from the flags of the same names in one place (``adkd.cli.resource_flags.ray_plan``).
    """

    address: str | None = None
    workers_per_run: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    max_failures: int = 2
    storage: str | None = None
    num_cpus: int | None = None
    engine: str | None = None  # ``module:function`` replacing the engine (benchmarks)


@dataclass
class ManyOutcome:
    """A multi-category run's results and what tracking said about it (None without tracking)."""

    outcome: AllCategoriesResult
    tracking_message: str | None = None

    @property
    def failed(self) -> list[str]:
        return self.outcome.failed


def is_settings_file(config_file: Path | None) -> bool:
    return config_file is not None and Path(config_file).suffix == ".toml"


def run_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """The settings of a run: a TOML ``--config`` is also the settings file (tracking URI, runs folder…)."""
    return load_settings(config_file if is_settings_file(config_file) else None, **flags)


def resolve_config(request: RunRequest, category: str, settings: Settings) -> TrainConfig:
    """Preset < settings file (``[train]`` table) < --config < --set < explicit flags."""
    from adkd.pipelines.train.presets import resolve_config as resolve

    extra = list(request.overrides)
    if request.out is not None:
        extra.append(f"out_dir={request.out}")
    if request.skip_validation:
        extra.append("skip_validation=true")
    config_file, file_values, source = request.config_file, settings.train, None
    if is_settings_file(config_file):
        source = f"config file {config_file}"
        # A TOML --config was read as the settings file: its [train] table (and any top-level training
        # key) is already in the settings, and its tracking URI, runs folder… apply to this run.
        config_file, file_values = None, {**settings.train, **settings.training_keys}
    return resolve(
        request.model,
        request.preset,
        category=category,
        data=request.data,
        overrides=extra,
        config_file=config_file,
        defaults={"out_dir": str(settings.runs_dir / "train")},
        settings=file_values,
        source=source,
    )


def make_local(config: TrainConfig, settings: Settings) -> TrainConfig:
    """The config with its data root made local in this process (s3:// synced for its category only)."""
    root = local_root(config.data, settings.cache_dir, settings.s3_endpoint_url, [config.category])
    return config.model_copy(update={"data": str(root)})


def train_one(
    request: RunRequest, settings: Settings | None = None, callbacks: Sequence[TrainCallback] = ()
) -> TrainResult:
    """Train ``request.category`` in this process, tracked unless ``request.tracking`` or the settings say no."""
    request.check()
    assert request.category is not None
    settings = settings or run_settings(request.config_file)
    config = resolve_config(request, request.category, settings)
    check_category(config.data, config.category)  # before a tracking run is created
    check_teacher_weights(config)
    attached = list(callbacks)
    if request.tracking and settings.tracking:
        from adkd.platform.registry.publishing import RegistryPublisher
        from adkd.platform.tracking.session import StandaloneTracker

        tracker = StandaloneTracker.open(
            settings,
            config,
            publisher=RegistryPublisher(settings.registered_model_name),
            register=settings.register_models,
            run_name=request.run_name,
        )
        attached.append(tracker)
    local = make_local(config, settings)
    if local.tiling.splits_positions:
        result = train_positions(local, attached, settings)
        fresh = "resume asked but per-position runs do not resume: the positions trained from scratch"
        note = fresh if request.resume else None
    else:
        # Imported once the settings and the data root are known good: a bad one is refused in a second, not
        # after the training stack's import (torch, scikit-learn: 5-6 CPU-s).
        from adkd.pipelines.train.engine import train_category

        resume_from, note = resume_path(local) if request.resume else (None, None)
        result = train_category(local, attached, resume_from=resume_from)
    if note:
        result.notes.insert(0, note)
    return result


def train_positions(config: TrainConfig, callbacks: Sequence[TrainCallback], settings: Settings) -> TrainResult:
    """``tiling.mode=per_position``: one run per tile position, all at once on Ray, then one assembled model."""
    from adkd.pipelines.train.positions import train_per_position
    from adkd.platform.cluster.positions import RayPositionTrainer

    def run_configs(configs: Sequence[TrainConfig], **options: Any) -> AllCategoriesResult:
        return train_configs(configs, settings, RayPlan(), **options)

    return train_per_position(config, callbacks, RayPositionTrainer(run_configs, callbacks))


def resume_path(config: TrainConfig) -> tuple[Path | None, str | None]:
    """``--resume``: the run folder's ``last.pt`` when there is one, else (None, a note): a fresh start."""
    from adkd.pipelines.train.checkpoint import LAST
    from adkd.pipelines.train.run_setup import run_dir_for

    last = run_dir_for(config) / LAST
    if last.is_file():
        return last, None
    return None, f"resume asked but {last} does not exist: started from scratch"


def train_many(
    request: RunRequest,
    settings: Settings | None = None,
    plan: RayPlan | None = None,
    listeners: Sequence[RunListener] = (),
) -> ManyOutcome:
    """Train every requested category at once on Ray; results and outputs land under ``--out`` or the runs folder."""
    request.check()
    plan = plan or RayPlan()
    settings = settings or run_settings(request.config_file, ray_address=plan.address)
    names = list_categories(request.data, request.categories, settings.s3_endpoint_url)
    configs = [resolve_config(request, name, settings) for name in names]
    if not (plan.address or settings.ray_address):  # the embedded Ray trains here: one check (and download) for all
        for config in {(c.backbone, c.weights): c for c in configs}.values():
            check_teacher_weights(config)
    attached = list(listeners)
    tracking = None
    if request.tracking and settings.tracking:
        tracking = tracking_listener(settings, request, names)
        attached.append(tracking)
    outcome = train_configs(configs, settings, plan, attached, runs_dir=batch_runs_dir(request, configs, settings))
    message = tracking.summary.message if tracking is not None and tracking.summary is not None else None
    return ManyOutcome(outcome, message)


def batch_runs_dir(request: RunRequest, configs: Sequence[TrainConfig], settings: Settings) -> Path:
    """Where several categories' batch folder goes: ``--out``, else an ``out_dir`` the user set (``--set``,
    ``--config``, the settings file's [train]), else the runs folder. Ray's workers write to scratch folders, so
    ``out_dir`` would otherwise be dropped without a word."""
    if request.out is not None:
        return Path(request.out)
    chosen = sorted({c.out_dir for c in configs} - {str(settings.runs_dir / "train")})
    return Path(chosen[0]).expanduser() if chosen else settings.runs_dir


def train_configs(
    configs: Sequence[TrainConfig],
    settings: Settings,
    plan: RayPlan,
    listeners: Sequence[RunListener] = (),
    *,
    keys: Sequence[str] | None = None,
    runs_dir: Path | None = None,
    run_id: str | None = None,
) -> AllCategoriesResult:
    """Resolved configs at once on Ray, one per run key (default the categories; ``adkd benchmark``: row x category)."""
    from adkd.platform.cluster.driver import RayRunOptions, run_all_categories
    from adkd.platform.cluster.resources import resources_for

    address = plan.address or settings.ray_address
    options = RayRunOptions(
        resources=resources_for(plan, address=address),
        address=address,
        num_cpus=plan.num_cpus,
        runs_dir=runs_dir if runs_dir is not None else settings.runs_dir,
        run_id=run_id,
        storage_path=plan.storage,
        max_failures=plan.max_failures,
        engine=plan.engine,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.aws_region,
    )
    return run_all_categories(configs, options, listeners, keys=keys)


def tracking_listener(settings: Settings, request: RunRequest, names: list[str]) -> Any:
    """A parent MLflow run for a multi-category run and a child per category (registered unless told not to)."""
    from adkd.platform.cluster.listeners import TrackingListener
    from adkd.platform.registry.publishing import RegistryPublisher
    from adkd.platform.tracking.session import TrackingSession

    session = TrackingSession.from_settings(
        settings,
        request.data,
        command="train",
        publisher=RegistryPublisher(settings.registered_model_name),
        params={"categories": ",".join(names), "model": request.model, "preset": request.preset or ""},
        tags={"categories": ",".join(names), "mode": "all-categories"},
        register=settings.register_models,
        run_name=request.run_name,
    )
    return TrackingListener(session)
