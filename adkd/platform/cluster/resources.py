"""What one category asks the Ray cluster for, and the checks that refuse requests that cannot work.

The errors name the setting (``workers per category`` and so on), not a command-line flag: the
same request comes from ``adkd train``, ``adkd benchmark`` and the Python API.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from adkd.errors import ConfigError
from adkd.platform.cluster.worker import DEFAULT_ENGINE


@dataclass(frozen=True)
class CategoryResources:
    """What one category's training asks the cluster for: workers, and CPUs and GPUs per worker."""

    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers per category must be >= 1, got {self.workers}; use 1 or more")
        if self.cpus <= 0:
            raise ConfigError(f"cpus per category must be > 0, got {self.cpus:g}; fractions like 0.5 are allowed")
        if self.gpus < 0:
            raise ConfigError(f"gpus per category must be >= 0, got {self.gpus:g}; use 0 to train on CPU")
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ConfigError(
                f"gpus per category above 1 must be a whole number, got {self.gpus:g}; use a fraction up to 1 "
                "or a whole number of GPUs"
            )

    def per_worker(self) -> dict[str, float]:
        """Ray Train's ``resources_per_worker``."""
        out = {"CPU": float(self.cpus)}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        return out


def check_distributed(resources: CategoryResources, engine: str | None) -> None:
    """Several workers per category only help an engine that shards batches and averages gradients.

    Ray Train sets up the process group (gloo/NCCL) for every worker; the engine says it uses it by
    exposing ``SUPPORTS_DISTRIBUTED = True`` (the default engine does: data-parallel, ``batch_size``
    per worker). Without that, N workers would train N identical copies.
    """
    if resources.workers == 1:
        return
    module = (engine or DEFAULT_ENGINE).partition(":")[0]
    if not getattr(importlib.import_module(module), "SUPPORTS_DISTRIBUTED", False):
        raise ConfigError(
            f"workers per category {resources.workers}: the training engine ({module}) does not do "
            "data-parallel training, so extra workers would train identical copies; use 1 worker per "
            "category (categories already train in parallel) and give it more CPUs or GPUs per category"
        )
    if 0 < resources.gpus < 1:
        raise ConfigError(
            f"workers per category {resources.workers} with gpus per category {resources.gpus:g}: the workers "
            "of one category could share a GPU, which NCCL refuses; give each worker a whole GPU or use 1 worker"
        )


def check_fits(resources: CategoryResources, cluster: dict[str, float]) -> None:
    """Refuse a per-category request no node set could ever satisfy (Ray would wait forever)."""
    need_cpu = resources.cpus * resources.workers
    need_gpu = resources.gpus * resources.workers
    have_cpu = cluster.get("CPU", 0.0)
    have_gpu = cluster.get("GPU", 0.0)
    if need_cpu > have_cpu + 1e-9:
        raise ConfigError(
            f"one category asks for {need_cpu:g} CPUs (cpus per category x workers per category) but the Ray "
            f"cluster has {have_cpu:g}; lower the cpus or workers per category, or add nodes"
        )
    if need_gpu > have_gpu + 1e-9:
        raise ConfigError(
            f"one category asks for {need_gpu:g} GPUs (gpus per category x workers per category) but the Ray "
            f"cluster has {have_gpu:g}; set gpus per category to 0 (CPU) or use a cluster with GPUs"
        )
