"""`run_adkd` keeps `subprocess.run`'s contract: each command its own environment, folder, streams and exit code."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.cli_process import ADKD, run_adkd, stop_warm

pytestmark = pytest.mark.integration


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_each_command_reads_its_own_environment_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    narrow = run_adkd(["--help"], env={**env, "COLUMNS": "60"})
    wide = run_adkd(["--help"], env={**env, "COLUMNS": "200"})
    default = run_adkd(["--help"], env=env)
    assert (narrow.returncode, wide.returncode, default.returncode) == (0, 0, 0), default.stderr
    # adkd's consoles take their width when adkd is imported: each command imported it under its own COLUMNS,
    # and the last, given none, did not inherit the one before (rich's 80 when the output is not a terminal).
    assert _widest(narrow.stdout) <= 60 < _widest(default.stdout) <= 80 < _widest(wide.stdout)
    monkeypatch.setenv("ADKD_TEST_COLD_CLI", "1")  # the same command as a plain subprocess
    fresh = run_adkd(["--help"], env=env)
    assert fresh.args == [ADKD, "--help"] and fresh.returncode == 0
    assert default.stdout == fresh.stdout and default.stderr == fresh.stderr == ""


def test_the_warm_process_own_environment_does_not_reach_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    stop_warm()
    monkeypatch.setenv("COLUMNS", "60")  # the environment the next warm process starts with
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    try:
        done = run_adkd(["--help"], env=env)
    finally:
        stop_warm()  # the next test's warm process starts without COLUMNS
    assert done.returncode == 0 and 60 < _widest(done.stdout) <= 80, done.stdout


def test_folder_streams_and_exit_code_are_the_commands(tmp_path) -> None:
    made = run_adkd(["data", "synth", "d", "--categories", "disc", "--train", "2", "--test", "2"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "d" / "disc" / "train" / "good").is_dir()  # the relative path, read in its own folder
    refused = run_adkd(["data", "validate", "missing"], cwd=tmp_path)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0], refused.stderr
    with pytest.raises(
        AssertionError, match=r"^adkd data validate missing\n\nerror:"
    ):  # ok=True: the command, its output
        run_adkd(["data", "validate", "missing"], cwd=tmp_path, ok=True)


def test_a_timeout_kills_the_command(tmp_path) -> None:
    # A server that takes the connection and never answers: the download waits on it until killed.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(subprocess.TimeoutExpired):
            run_adkd(["data", "download", "mvtec", str(tmp_path / "m"), "--categories", "bottle", "--url-base", url],
                     timeout=15)  # fmt: skip
        conn, _ = server.accept()
        conn.settimeout(5)  # the download itself would wait 30 s
        with conn:
            while conn.recv(65536):  # the request, then end of file: the command's socket closed with it
                pass
