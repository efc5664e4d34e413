"""Joining Ray: start an embedded Ray or connect to a cluster, Ray's auth token, run storage.

Every environment variable the Ray path reads is read here (Ray's own switches and the AWS region
for an ``s3://`` run storage with a custom endpoint).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from adkd.errors import ServiceError
from adkd.settings import inside_ray_job, ray_auth_mode_chosen


def package_dir() -> str:
    """The adkd package folder (shipped to a cluster's nodes)."""
    return str(Path(__file__).resolve().parents[2])


def use_ray_token_if_present() -> None:
    """Send Ray's auth token when one exists (``ray get-auth-token``), as the ``ray`` CLI does.

    Token authentication stays on: a cluster started with it refuses clients without the token.
    """
    if ray_auth_mode_chosen():
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(
    address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None, verbose: bool = False
) -> dict[str, float]:
    """Start an embedded Ray (no address) or join a cluster; return the cluster's total resources."""
    import ray

    from adkd.platform.console.quiet import debug_requested, drop_ray_driver_noise

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    verbose = verbose or debug_requested()
    # Read by Ray Train in the worker processes this driver starts: no print patching unless asked.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    common: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
    }
    try:
        if address:
            use_ray_token_if_present()
            # A real cluster's nodes do not have this checkout: ship the package with the job.
            runtime_env = {"py_modules": [package_dir()], "excludes": ["__pycache__", "*.pyc"]}
            if inside_ray_job():
                runtime_env = {}  # inside `adkd submit`: the job's runtime_env already carries it
            ray.init(address=address, runtime_env=runtime_env or None, **common)
        else:
            if not verbose:
                # Ray turns token authentication on for a new local cluster (kept) and warns that it did.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                drop_ray_driver_noise()
            # One machine, nothing to drain or scrape: Ray Train's preemption watcher (an actor per category, polling
            # every 5 s) and its Prometheus metrics callbacks only cost processes and CPU here. Read by the
            # processes the embedded Ray starts, so set before it starts; a user's own setting is kept.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
            # "local", not None: None joins whatever `ray start` last left in /tmp/ray (another user's or
            # test's cluster, perhaps already gone); the embedded mode must start its own.
            ray.init(
                address="local",
                num_cpus=int(num_cpus) if num_cpus else None,
                num_gpus=int(num_gpus) if num_gpus is not None else None,
                include_dashboard=False,
                **common,
            )
    except ConnectionError as exc:
        raise ServiceError(
            f"cannot reach the Ray cluster at {address}: {exc}; start one with `ray start --head` "
            "or leave --address/RAY_ADDRESS unset for the embedded local Ray"
        ) from None
    except ValueError as exc:
        raise ServiceError(f"cannot start or join Ray (address={address!r}): {exc}") from None
    return dict(ray.cluster_resources())


def shutdown() -> None:
    """Stop this process's Ray connection (and the embedded Ray it started)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def storage_uri(storage_path: str | None, run_dir: Path) -> str:
    """Where runs keep checkpoints and final outputs: ``<run_dir>/ray`` unless a path or URI is given."""
    if storage_path is None:
        return str((run_dir / "ray").resolve())
    if "://" in storage_path:
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve())


def storage_filesystem(storage: str, endpoint_url: str | None, region: str = "us-east-1") -> tuple[str, Any]:
    """Run storage: s3:// with a custom endpoint needs an explicit pyarrow S3 filesystem."""
    if not storage.startswith("s3://") or not endpoint_url:
        return storage, None
    from pyarrow import fs

    scheme = "https" if endpoint_url.startswith("https") else "http"
    endpoint = endpoint_url.split("://", 1)[-1].rstrip("/")
    filesystem = fs.S3FileSystem(endpoint_override=endpoint, scheme=scheme, region=region)
    return storage[len("s3://") :], filesystem
