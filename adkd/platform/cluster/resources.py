"""What one run (a category's training) asks the Ray cluster for, and the checks that refuse requests that cannot work.

The errors name the settings as every command's flags do (``--workers-per-run``, ``--cpus-per-worker``,
``--gpus-per-worker``, the RayPlan fields of the same names): the request comes from ``adkd train``,
``adkd benchmark``, ``adkd tune`` and the Python API alike.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.cluster.worker import DEFAULT_ENGINE


@dataclass(frozen=True)
class CategoryResources:
    """What one run asks the cluster for: workers, and CPUs and GPUs per worker."""

    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers per run must be >= 1, got {self.workers}; use 1 or more")
        if self.cpus <= 0:
            raise ConfigError(f"cpus per worker must be > 0, got {self.cpus:g}; fractions like 0.5 are allowed")
        if self.gpus < 0:
            raise ConfigError(f"gpus per worker must be >= 0, got {self.gpus:g}; use 0 to train on CPU")
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ConfigError(
                f"gpus per worker above 1 must be a whole number, got {self.gpus:g}; use a fraction up to 1 "
                "or a whole number of GPUs"
            )

    def per_worker(self) -> dict[str, float]:
        """What each worker asks Ray for (a one-worker run's task options, Ray Train's ``resources_per_worker``)."""
        out = {"CPU": float(self.cpus)}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        return out


def resources_for(plan: Any, cluster: dict[str, float] | None = None, address: str | None = None) -> CategoryResources:
    """What one run asks for under ``plan`` (a ``RayPlan``), checked. GPUs per worker, when the plan leaves them
    open, are 1 where the cluster has GPUs: ``cluster`` (its resources, when connected already), else the cluster
    at ``address``, else this machine (an embedded Ray)."""
    gpus = plan.gpus_per_worker
    if gpus is None:
        if cluster is None and address:
            from adkd.platform.cluster.connection import connect

            cluster = connect(address)
        has_gpus = cluster.get("GPU", 0.0) > 0 if cluster is not None else _local_gpus()
        gpus = 1.0 if has_gpus else 0.0
    return CategoryResources(workers=plan.workers_per_run, cpus=plan.cpus_per_worker, gpus=gpus)


def _local_gpus() -> bool:
    """Whether an embedded Ray on this machine will offer GPUs: Ray's own count (CUDA_VISIBLE_DEVICES, else
    NVML), the one its scheduler uses, without importing torch in the driver (3 CPU-s)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        return manager is not None and manager.get_current_node_num_accelerators() > 0
    except (ImportError, AttributeError):  # a Ray that moved its accelerator managers: ask torch
        import torch

        return bool(torch.cuda.is_available())


def check_distributed(resources: CategoryResources, engine: str | None) -> None:
    """Several workers per run only help an engine that shards batches and averages gradients.

    Ray Train sets up the process group (gloo/NCCL) for every worker; the engine says it uses it by
    exposing ``SUPPORTS_DISTRIBUTED = True`` (the default engine does: data-parallel, ``batch_size``
    per worker). Without that, N workers would train N identical copies.
    """
    if resources.workers == 1:
        return
    module = (engine or DEFAULT_ENGINE).partition(":")[0]
    if not getattr(importlib.import_module(module), "SUPPORTS_DISTRIBUTED", False):
        raise ConfigError(
            f"workers per run {resources.workers}: the training engine ({module}) does not do "
            "data-parallel training, so extra workers would train identical copies; use 1 worker per "
            "run (categories already train in parallel) and give it more CPUs or GPUs per worker"
        )
    if 0 < resources.gpus < 1:
        raise ConfigError(
            f"workers per run {resources.workers} with gpus per worker {resources.gpus:g}: the workers "
            "of one run could share a GPU, which NCCL refuses; give each worker a whole GPU or use 1 worker"
        )


def memory_request(config: TrainConfig) -> dict[str, float]:
    """A tiled run's Ray ``memory`` request: its decoded full-resolution images, so Ray does not put more tiled
    runs on a node than their images fit in; {} for an untiled run (its images are small and squashed)."""
    needed = _tiled_data_bytes(config)
    return {"memory": float(needed)} if needed else {}


def _tiled_data_bytes(config: TrainConfig) -> int:
    """What a tiled run's decoded images take in memory (read from the files' headers): the training images
    twice (the decoded category and its split), the test images and their masks; 0 when untiled or not local."""
    if not config.tiling.enabled or "://" in config.data:
        return 0
    from PIL import Image

    from adkd.pipelines.data.mvtec import list_items

    root = Path(config.data).expanduser()
    if not (root / config.category).is_dir():
        return 0
    total = 0
    for item in list_items(root, config.category, config.data_gate.image_level):
        if config.tiling.image_size is not None:
            pixels = config.tiling.image_size**2
        else:
            with Image.open(item.image_path) as img:
                pixels = img.width * img.height
        total += pixels * (3 * 2 if item.split == "train" else 3 + 1)
    return total


def check_memory(configs: list[TrainConfig], cluster: dict[str, float]) -> None:
    """Refuse a tiled run whose images alone need more memory than the Ray cluster has (it would never start)."""
    have = cluster.get("memory", 0.0)
    for config in configs:
        need = memory_request(config).get("memory", 0.0)
        if have and need > have:
            raise ConfigError(
                f"{config.category}: its images at full resolution need {need / 2**30:.1f} GiB, more than the Ray "
                f"cluster's {have / 2**30:.1f} GiB; set tiling.image_size to bring them to a smaller square"
            )


def check_fits(resources: CategoryResources, cluster: dict[str, float]) -> None:
    """Refuse a run's request no node set could ever satisfy (Ray would wait forever)."""
    need_cpu = resources.cpus * resources.workers
    need_gpu = resources.gpus * resources.workers
    have_cpu = cluster.get("CPU", 0.0)
    have_gpu = cluster.get("GPU", 0.0)
    if need_cpu > have_cpu + 1e-9:
        raise ConfigError(
            f"one run asks for {need_cpu:g} CPUs (cpus per worker x workers per run) but the Ray "
            f"cluster has {have_cpu:g}; lower the cpus per worker or the workers per run, or add nodes"
        )
    if need_gpu > have_gpu + 1e-9:
        raise ConfigError(
            f"one run asks for {need_gpu:g} GPUs (gpus per worker x workers per run) but the Ray "
            f"cluster has {have_gpu:g}; set gpus per worker to 0 (CPU) or use a cluster with GPUs"
        )
