"""What a tracked run records about where it ran: git commit, versions, user, device, data set name."""

from __future__ import annotations

import getpass
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def git_commit() -> str:
    """The commit of the adkd source tree (or of the working directory), 'unknown' outside git."""
    for where in (Path(__file__).resolve().parents[3], Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def environment_tags() -> dict[str, str]:
    """Tags of every run of a command: git commit, adkd and torch versions, user."""
    from adkd.version import __version__

    return {
        "git_commit": git_commit(),
        "adkd_version": __version__,
        "torch_version": torch_version(),
        "user": getpass.getuser(),
    }


def torch_version() -> str:
    """``torch.__version__`` (with its build suffix, e.g. ``+cu130``) without importing torch: a Ray driver never
    needs torch (3 CPU-s); its ``version.py`` is a plain module of constants."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    location = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    module_spec = importlib.util.spec_from_file_location("_adkd_torch_version", location)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return str(module.__version__)


# The start event of a Ray run carries the device its worker resolved under this key: the driver that tracks the
# run may sit on another node (a CPU head) and need not import torch to ask.
RESOLVED_DEVICE = "resolved_device"


def device_tag(config: dict[str, Any]) -> str:
    """The device a run trains on, as its tag shows it (``cuda (<GPU name>)`` or ``cpu`` for ``auto``).

    A config that carries ``RESOLVED_DEVICE`` (set where the run trained) is taken at its word.
    """
    if config.get(RESOLVED_DEVICE):
        return str(config[RESOLVED_DEVICE])
    name = str(config.get("device", "auto"))
    if name != "auto":
        return name
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def dataset_name(data_root: str | Path) -> str:
    """The experiment name of a data set: the last component of its root (local path or s3://)."""
    text = str(data_root).rstrip("/")
    return Path(urlparse(text).path if "://" in text else text).name or "adkd"
