"""What a run holds in memory: peak resident memory of the process, peak GPU memory, and what is free.

The peaks go into the run's metrics (``memory/peak_rss_mb``, ``memory/peak_gpu_mb``); the free figures let
the teacher cache be sized before it is built (``feature_cache.plan_cache``).
"""

from __future__ import annotations

import resource
import shutil
import sys
from pathlib import Path

import torch

MB = 1024**2


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``getrusage``: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory(device: torch.device) -> dict[str, float]:
    """``memory/peak_rss_mb`` and, on CUDA, ``memory/peak_gpu_mb`` (the caching allocator's peak) of this process."""
    out = {"memory/peak_rss_mb": peak_rss_bytes() / MB}
    if device.type == "cuda" and torch.cuda.is_available():
        out["memory/peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def available_bytes(device: torch.device) -> int:
    """Memory that a new allocation on ``device`` can still take: free GPU memory, or MemAvailable of the host."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def free_disk_bytes(folder: Path) -> int:
    """Free space on the file system that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return int(shutil.disk_usage(path).free)
