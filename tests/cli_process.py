"""`adkd …` in a process of its own, forked from one that has already imported the heavy third-party libraries.

A fresh `adkd train` of a small synthetic category took 20.7 CPU-s, 10.3 when forked from a process that had
imported torch, torchvision, MLflow, scikit-learn and ONNX Runtime; `adkd registry list` 4.8 against 0.3 (on the
2-core machine the suite is timed on). The suite runs about a hundred such commands. ``run_adkd`` keeps
``subprocess.run``'s contract (a process of its own with exactly the given environment, working folder and argv,
stdin from /dev/null or ``input``, captured stdout and stderr, the exit code, a kill on timeout) but forks the
process from a warm one (one per pytest worker, started on first use) instead of starting an interpreter. adkd
itself is imported afresh in every command, after its environment is set, so anything adkd reads at import time
(consoles' widths, settings) is read as in a fresh process. The warm process imports only third-party libraries,
starts no Python thread (checked) and touches no tensor; the native pools its libraries start (OpenBLAS, jemalloc,
ONNX Runtime) are rebuilt in a forked process when used, and their exit handlers are skipped (``_run_command``).

What a fork cannot prove (a fresh interpreter's imports, the console script itself) the README test proves: it runs
every command as typed, from bash. ``ADKD_TEST_COLD_CLI=1`` runs every command here as a plain subprocess too.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ADKD = str(BIN / "adkd")
# What every command pays for before its own work (`python -X importtime`), none of it adkd's.
PRELOAD = (
    "torch",
    "torchvision",
    "numpy",
    "scipy.ndimage",
    "scipy.stats",
    "pandas",
    "PIL.Image",
    "sklearn.metrics",
    "onnx",
    "onnxruntime",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "sqlalchemy",
    "matplotlib",
    "pydantic",
    "typer",
    "rich.console",
    "rich.table",
    "requests",
    "boto3",
    "yaml",
    # The data gate's GX, for a command whose files GX has not checked before (the gate remembers the rest).
    "great_expectations",
    "great_expectations.expectations",
)
STARTUP_TIMEOUT_S = 300.0


class _Warm:
    """The warm process and this worker's connection to it (one command at a time)."""

    def __init__(self) -> None:
        # A Unix socket's path holds at most 107 bytes: a long TMPDIR falls back to /tmp.
        base = None if len(tempfile.gettempdir()) <= 60 else "/tmp"
        self.dir = Path(tempfile.mkdtemp(prefix="adkd-warm-cli-", dir=base))
        self.sock_path = self.dir / "sock"
        with (self.dir / "warm.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(self.sock_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.lock = threading.Lock()

    def connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the warm adkd process exited: {(self.dir / 'warm.log').read_text()[-3000:]}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.sock_path))
                sock.settimeout(timeout)
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the warm adkd process did not listen in {STARTUP_TIMEOUT_S} s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


_warm: _Warm | None = None


def _running() -> bool:
    return _warm is not None and _warm.proc.poll() is None


def _the_warm() -> _Warm:
    global _warm
    if not _running():
        stop_warm()  # a warm process that died leaves its folder
        _warm = _Warm()
        atexit.register(_warm.stop)
    return _warm


def stop_warm() -> None:
    """Stop this worker's warm process (the next command starts another, with the environment of that moment)."""
    global _warm
    if _warm is not None:
        _warm.stop()
        _warm = None


def run_adkd(
    args: list[str] | tuple[str, ...],
    *,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    input: str | None = None,
    start_warm: bool = True,
    ok: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([BIN/adkd, *args], cwd=, env=, capture_output=True, text=True, timeout=, input=)``.

    ``ok=True`` asserts exit code 0, the message naming the command and ending its stdout and stderr.
    ``start_warm=False`` for a command that stops at its checks: it forks from this worker's warm process if one
    is running and is a plain subprocess otherwise, since such a command imports little (measured alone: the
    malformed-grid test of test_benchmark_grid 1.7 s with a subprocess, 10 s when it started the warm process).
    """
    argv = [ADKD, *map(str, args)]
    env = dict(os.environ if env is None else env)
    cwd = str(Path(cwd).resolve()) if cwd is not None else str(Path.cwd())
    if os.environ.get("ADKD_TEST_COLD_CLI") == "1" or not (start_warm or _running()):
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
    else:
        done = _run_warm(argv, cwd, env, timeout, input)
    if ok:
        assert done.returncode == 0, f"adkd {' '.join(argv[1:])}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _run_warm(
    argv: list[str], cwd: str, env: dict[str, str], timeout: float, input: str | None
) -> subprocess.CompletedProcess[str]:
    """``argv`` forked from this worker's warm process (started if need be), as ``run_adkd`` describes."""
    warm = _the_warm()
    with warm.lock, tempfile.TemporaryDirectory(prefix="cmd-", dir=warm.dir) as scratch:
        files = {name: str(Path(scratch) / name) for name in ("stdin", "stdout", "stderr")}
        Path(files["stdin"]).write_text(input or "")
        request = {"argv": argv, "cwd": cwd, "env": env, **files}
        with warm.connect(timeout) as sock, sock.makefile("rw") as stream:
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            pid = int(json.loads(stream.readline())["pid"])
            try:
                reply = stream.readline()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(
                    argv, timeout, Path(files["stdout"]).read_text(), Path(files["stderr"]).read_text()
                ) from None
            if not reply:
                raise RuntimeError(f"the warm adkd process dropped `{' '.join(argv)}`; {warm.dir / 'warm.log'}")
            code = int(json.loads(reply)["returncode"])
        stdout, stderr = Path(files["stdout"]).read_text(), Path(files["stderr"]).read_text()
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


# ---- the warm process -------------------------------------------------------------------------------------


def _serve(sock_path: str) -> list[str] | None:
    """Listen for commands; in a command's own process, return its argv (the caller then runs adkd)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a Python thread would not survive the fork, and might hold a lock
        names = [t.name for t in threading.enumerate()]
        raise RuntimeError(f"the preloaded libraries started Python threads {names}: forking would not be safe")
    # What the imports built lives as long as the process: a command's collections (and its pages, shared with
    # this process until written) need not walk it.
    gc.collect()
    gc.freeze()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(8)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters below reap themselves
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    parent = os.getppid()
    server.settimeout(5)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the pytest worker is gone (killed): nobody will ask again
                os._exit(0)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() != 0:
            conn.close()
            continue
        # The waiter: starts the command, tells its pid, waits for it, tells its exit code.
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.settimeout(None)
        stream = conn.makefile("rw")
        request = json.loads(stream.readline())
        pid = os.fork()
        if pid == 0:
            conn.close()
            stream.close()
            try:
                _become(request)
            except BaseException as exc:  # as exec would: a message and 127
                print(f"cannot start {request['argv']}: {exc}", file=sys.stderr, flush=True)
                os._exit(127)
            return request["argv"]
        stream.write(json.dumps({"pid": pid}) + "\n")
        stream.flush()
        _, status, _ = os.wait4(pid, 0)
        try:
            stream.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
            stream.flush()
        finally:
            os._exit(0)


def _become(request: dict) -> None:
    """Turn this forked process into the command's: its process group, folder, environment and streams."""
    os.setpgid(0, 0)  # a timeout kills the command and whatever it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, name, flags in (
        (0, "stdin", os.O_RDONLY),
        (1, "stdout", os.O_WRONLY | os.O_CREAT),
        (2, "stderr", os.O_WRONLY | os.O_CREAT),
    ):
        opened = os.open(request[name], flags)
        os.dup2(opened, fd)
        os.close(opened)


def _run_command(argv: list[str]) -> None:
    """Run adkd as its console script would, then end the process as an interpreter's exit does for Python code.

    The exit code comes from SystemExit as Python derives it; then non-daemon threads are joined and atexit
    functions run (MLflow's flush, Ray's shutdown, temporary folders' cleanup), the streams are flushed and the
    process ends without the C libraries' own exit handlers: those of the thread pools the warm process started
    (OpenBLAS, jemalloc, ONNX Runtime) would wait for threads that a forked process does not have.
    """
    import traceback

    sys.argv = argv
    code = 0
    try:
        from adkd.cli.main import run

        run()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.path[0] = str(BIN)  # the console script's: not tests/, whose folders would shadow packages
    command = _serve(sys.argv[1])
    if command is not None:
        _run_command(command)
