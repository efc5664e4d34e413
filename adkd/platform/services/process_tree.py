"""Servers adkd starts end with it: SIGINT, SIGTERM and SIGHUP stop the whole process tree.

A child started in its own session does not see the terminal's Ctrl-C, and killing its process group
is not enough either: ``mlflow ui`` starts its job consumers in sessions of their own. So the tree
(the child and every descendant, read from /proc or ``ps``) is snapshotted, sent SIGTERM, and what is
still there after a grace period gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class StopRequest:
    """Set by the signal handlers of ``stop_on_signals``: which signal asked this process to stop."""

    signum: int | None = None


@contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the signals only record themselves (the caller stops its children, then returns)."""
    request = StopRequest()

    def handler(signum: int, frame: Any) -> None:
        request.signum = request.signum or signum

    if threading.current_thread() is not threading.main_thread():
        # Python delivers signals to the main thread only; there the caller's own handling stands.
        yield request
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of ``/proc/<pid>/stat`` after the command name) of every process this user can see.

    Fields are ``stat``'s from the state on: ``[1]`` the parent pid, ``[3]`` the session id, ``[11]``/``[12]``
    user/system CPU in clock ticks. Nothing on a system without /proc.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces; the fields after its closing one do not.
        yield int(entry.name), stat.rsplit(")", 1)[1].split()


def _parents() -> dict[int, int]:
    """pid → parent pid of every process this user can see."""
    if Path("/proc").is_dir():
        return {pid: int(fields[1]) for pid, fields in proc_stats()}
    out: dict[int, int] = {}
    listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        pid, ppid = line.split()
        out[int(pid)] = int(ppid)
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_tree(pid: int, grace_s: float = 10.0, reap: subprocess.Popen | None = None) -> None:
    """SIGTERM ``pid``, its process group and every descendant; SIGKILL what outlives ``grace_s``."""
    tree = process_tree(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap.poll()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if not any(alive(p) for p in tree):
            return
        time.sleep(0.1)
    # Whatever the survivors started since the snapshot goes too.
    survivors = [p for p in tree if alive(p)]
    for p in list(survivors):
        survivors.extend(q for q in process_tree(p) if q not in survivors)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _signal_all(survivors, signal.SIGKILL)
    if reap is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            reap.wait(timeout=5)


def run_until_stopped(cmd: Sequence[str], grace_s: float = 10.0, **popen: Any) -> tuple[int | None, int | None]:
    """Run ``cmd`` in its own session until it exits or this process gets SIGINT/SIGTERM/SIGHUP.

    Returns (the child's exit code, None) when it ended by itself, or (None, the signal) when a signal
    stopped it; either way no process of its tree is left running.
    """
    with stop_on_signals() as request:
        proc = subprocess.Popen(list(cmd), start_new_session=True, **popen)
        try:
            while request.signum is None:
                try:
                    code = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                # The child ended by itself; take down anything it left behind.
                stop_tree(proc.pid, grace_s, reap=proc)
                return code, None
        finally:
            if proc.poll() is None:
                stop_tree(proc.pid, grace_s, reap=proc)
        return None, request.signum
