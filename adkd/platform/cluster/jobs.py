"""`adkd submit` and `adkd jobs`: adkd commands as Ray jobs through the Ray Jobs API.

The job's runtime_env carries the ``adkd`` package (``py_modules``), so the cluster needs adkd's
dependencies but not this checkout. Its entrypoint is ``python -m adkd.cli.main <args>`` run by the
cluster's Python. Ray's token authentication is left as the cluster has it: the client reads the
token the standard way (``RAY_AUTH_TOKEN`` / ``~/.ray/auth_token``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError, ServiceError, first_line
from adkd.platform.cluster.connection import package_dir, use_ray_token_if_present

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Settings a job inherits from the submitting shell when set (never credentials).
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "ADKD_EXPERIMENT",
    "ADKD_RUNS_DIR",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
)
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "SESSION", "ACCESS_KEY")


def _dashboard_hint(address: str | None) -> str:
    what = f"cannot reach the Ray Jobs API at {address}" if address else "no Ray cluster was named and none runs here"
    return (
        f"{what}; pass --address http://<head>:8265 (the dashboard port) or set RAY_ADDRESS, and check the cluster "
        "runs with the dashboard (ray start --head)"
    )


@contextmanager
def _api(address: str | None) -> Iterator[Any]:
    """A JobSubmissionClient; connection problems become one ServiceError line."""
    from ray.job_submission import JobSubmissionClient

    use_ray_token_if_present()
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:
        raise ServiceError(f"{_dashboard_hint(address)} ({first_line(exc)})") from None
    try:
        yield client
    except (ConfigError, ServiceError):
        raise
    except RuntimeError as exc:
        message = first_line(exc)
        if "does not exist" in message or "not found" in message.lower():
            raise ConfigError(f"{message}; list the jobs with `adkd jobs list`") from None
        raise ServiceError(f"Ray Jobs API at {client.get_address()}: {message}") from None
    except ConnectionError as exc:
        raise ServiceError(f"{_dashboard_hint(address)} ({first_line(exc)})") from None


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict; a bad pair names itself."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--env '{pair}' is not KEY=VALUE; write e.g. --env ADKD_RUNS_DIR=/shared/runs")
        out[key.strip()] = value
    return out


def build_runtime_env(
    env: dict[str, str] | None = None, working_dir: str | None = None, pip: Sequence[str] = ()
) -> dict[str, Any]:
    """The job's runtime_env: the adkd package, forwarded settings, optional working dir and pip packages."""
    # Builds the job's environment: the settings the job must see the same way as this shell.
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env_vars.update(env or {})
    runtime_env: dict[str, Any] = {
        "py_modules": [package_dir()],
        "excludes": ["__pycache__", "*.pyc", ".venv", "adkd-runs", "demo-data"],
        "env_vars": env_vars,
    }
    if working_dir:
        if "://" not in working_dir and not Path(working_dir).is_dir():
            raise ConfigError(f"--working-dir {working_dir} is not a folder; pass a folder or a remote URI")
        runtime_env["working_dir"] = working_dir
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def entrypoint_for(args: Sequence[str], python: str = "python") -> str:
    """The shell command a job runs for ``adkd <args>``."""
    if not args:
        raise ConfigError("nothing to submit: write the adkd command after --, e.g. adkd submit -- train --help")
    args = list(args)
    if args[0] == "adkd":
        args = args[1:]
    if args and args[0] in ("submit", "jobs"):
        raise ConfigError(f"`adkd {args[0]}` cannot run as a job; submit a training command such as `train`")
    return shlex.join([python, "-m", "adkd.cli.main", *args])


def submit(
    args: Sequence[str],
    address: str | None = None,
    env: dict[str, str] | None = None,
    working_dir: str | None = None,
    submission_id: str | None = None,
    python: str = "python",
    entrypoint_num_cpus: float | None = None,
    agent_wait_s: float = 300.0,
) -> str:
    """Submit ``adkd <args>`` as a Ray job; return its submission id."""
    entrypoint = entrypoint_for(args, python)
    runtime_env = build_runtime_env(env, working_dir)
    secrets = [k for k in runtime_env["env_vars"] if any(m in k.upper() for m in SECRET_MARKERS)]
    if secrets:
        raise ConfigError(
            f"--env {', '.join(secrets)}: credentials would be visible in the Ray dashboard; "
            "configure them on the cluster nodes (AWS profile, instance role) instead"
        )
    with _api(address) as client:
        deadline = time.monotonic() + agent_wait_s
        while True:
            try:
                return client.submit_job(
                    entrypoint=entrypoint,
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata={"adkd_command": " ".join(args)[:500]},
                    entrypoint_num_cpus=entrypoint_num_cpus,
                )
            except RuntimeError as exc:
                # A head that has just started answers before its job agent is up.
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2.0)


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    """Every job the cluster knows, newest first."""
    with _api(address) as client:
        jobs = client.list_jobs()
    rows = [
        {
            "id": job.submission_id or job.job_id,
            "status": str(job.status.value if hasattr(job.status, "value") else job.status),
            "entrypoint": job.entrypoint,
            "start_time": job.start_time,
            "end_time": job.end_time,
            "message": job.message,
        }
        for job in jobs
    ]
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)


def status(job_id: str, address: str | None = None) -> dict[str, Any]:
    with _api(address) as client:
        info = client.get_job_info(job_id)
    return {
        "id": info.submission_id or job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "message": info.message,
    }


def logs(job_id: str, address: str | None = None) -> str:
    with _api(address) as client:
        return client.get_job_logs(job_id)


def follow(job_id: str, write: Callable[[str], None], address: str | None = None) -> str:
    """Stream a job's logs until it ends; return its final status."""

    async def tail(client: Any) -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    with _api(address) as client:
        asyncio.run(tail(client))
        return str(client.get_job_status(job_id).value)


def wait(job_id: str, address: str | None = None, timeout_s: float | None = None, poll_s: float = 2.0) -> str:
    """Block until the job reaches a terminal status (or the timeout); return the status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with _api(address) as client:
        while True:
            state = str(client.get_job_status(job_id).value)
            if state in TERMINAL:
                return state
            if deadline is not None and time.monotonic() > deadline:
                return state
            time.sleep(poll_s)


def stop(job_id: str, address: str | None = None) -> bool:
    with _api(address) as client:
        return bool(client.stop_job(job_id))
