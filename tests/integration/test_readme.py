"""The README is a test: its first block and every Quick-tour command, run as typed, in order, then the
high-resolution section's command (on the tour's data).

The commands run in an empty temporary directory (the repository root's role), with no ADKD_*, MLFLOW_*,
RAY_* or AWS_* variables, and the venv's bin first on PATH (what `source .venv/bin/activate` does).
`make demo` is run as its recipe: the install step is what the suite itself runs in, then `adkd demo`.
Three commands need the world outside: `adkd ui` serves until stopped (the test waits for the page,
then sends SIGTERM and checks that the port is free again); `adkd data download mvtec` fetches archives of
several GB and `adkd data download cifar10` one of 170 MB: the test first fetches small archives in MVTec's
format (CIFAR-10: the shared subset packed in the official format) from a real HTTP server on 127.0.0.1 into
the same folder, with the same command plus `--url-base` and `--checksums`/`--md5`, so the command as typed
finds its categories and completes (their network paths: test_download.py, test_cifar10_download.py).
The served archives are the smallest that prove each command (a few images per category), and the working
directory holds an `adkd.toml` (the documented settings file) whose `[train]` table sets one epoch: a command
that trains is proven by running, registering and printing its table; what the models learn is the
training tests' business (test_train_synthetic.py, the Ray group), not the README's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adkd.pipelines.data.synthetic_dataset import synthesize
from tests.integration.conftest import FileServer
from tests.integration.test_cifar10_download import ARCHIVE, official_archive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
GRIDS = REPO / "adkd" / "benchmark_grids"
BIN = Path(sys.executable).parent
CLEARED = ("ADKD_", "MLFLOW_", "RAY_", "AWS_")
# Lines that are Ray's, MLflow's or Python's own notices, not adkd's (adkd prints "error: ..." for its own).
THIRD_PARTY = re.compile(
    r"WARNING|Warning:|warnings\.warn|\(raylet\)|INFO mlflow|\bINFO\b.*\.py:\d+|setuptools|Downloading: \""
)


# The sections whose first ```bash block runs after the Quick tour's, on its data, in this order.
AFTER_TOUR = ("## High-resolution images",)


def readme_blocks(text: str) -> tuple[list[str], list[str]]:
    """The commands of the README's first ```bash block, then those of the first block under '## Quick tour'
    and under each AFTER_TOUR heading, in that order."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks, "README lost its first block"
    tour = []
    for heading in ("## Quick tour", *AFTER_TOUR):
        block = re.search(rf"^{re.escape(heading)}.*?```bash\n(.*?)```", text, re.S | re.M)
        assert block, f"README lost the commands under '{heading}'"
        tour += _commands(block.group(1))
    return _commands(blocks[0]), tour


def _commands(block: str) -> list[str]:
    out = []
    for line in block.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()  # trailing comments; no command here quotes a '#'
        if command and not command.startswith("#"):
            out.append(command)
    return out


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(BIN.parent), HOME=str(home))
    env.pop("COLUMNS", None)
    return env


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{time.monotonic() - started:6.1f} s  {command}")  # each command's cost, shown with pytest -rP
    assert done.returncode == 0, f"README command failed ({done.returncode}): {command}\n{done.stdout}\n{done.stderr}"
    return done


def _assert_quiet(command: str, done: subprocess.CompletedProcess) -> None:
    noise = [line for line in (done.stdout + done.stderr).splitlines() if THIRD_PARTY.search(line)]
    assert not noise, f"`{command}` printed third-party notices:\n" + "\n".join(noise[:10])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen, port: int, command: str) -> None:
    """SIGTERM a served command; its port must be free again within 30 s."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _port_open(port), f"port {port} still served after SIGTERM to `{command}`"


def _ui(command: str, cwd: Path, env: dict[str, str]) -> None:
    port = int(m.group(1)) if (m := re.search(r"--port\s+(\d+)", command)) else 5000
    if _port_open(port):
        pytest.fail(f"port {port} is taken before `{command}` runs; stop what holds it")
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        page = b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read()
                break
            except OSError:
                time.sleep(1)
        assert b"MLflow" in page or b"mlflow" in page, f"`{command}` served no MLflow page on port {port}"
    finally:
        _stop(proc, port, command)


def _station(command: str, cwd: Path, env: dict[str, str]) -> None:
    """`adkd station` serves until stopped: wait until the watched folder's images are logged, then SIGTERM."""
    port = int(m.group(1)) if (m := re.search(r"--port\s+(\d+)", command)) else 8200
    watched = re.search(r"--watch\s+(?:\S+=)?(\S+)", command)
    expected = len(list((cwd / watched.group(1)).rglob("*.png"))) if watched else 0
    if _port_open(port):
        pytest.fail(f"port {port} is taken before `{command}` runs; stop what holds it")
    log = cwd.parent / "station.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=out, stderr=out)
    logged = -1
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and logged < expected:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/verdicts", timeout=5) as resp:
                    logged = sum(c["verdicts"] for c in json.loads(resp.read())["counts"].values())
            except OSError:
                pass
            time.sleep(1)
        assert logged == expected, f"`{command}` logged {logged} of the {expected} watched images:\n{log.read_text()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            assert b"adkd station" in resp.read()
    finally:
        _stop(proc, port, command)
    _assert_quiet(command, subprocess.CompletedProcess(command, 0, log.read_text(), ""))


def _serve_mvtec(file_server: FileServer, scratch: Path, category: str, like: str) -> str:
    """A small valid MVTec-layout ``category`` (adkd's synthetic ``like``, binary masks) as ``category.tar.xz``."""
    synthesize(scratch, [like], size=64, n_train=8, n_test=6)
    (scratch / like).rename(scratch / category)
    archive = file_server.root / f"{category}.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(scratch / category, arcname=category)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def _make_target(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, f"the Makefile has no '{target}' target"
    return [line.strip().lstrip("@") for line in recipe.group(1).splitlines()]


# What each command promises, checked after it ran: (command prefix, check(cwd, home, output)).
Check = Callable[[Path, Path, str], None]


def _files(*paths: str) -> Check:
    def check(cwd: Path, home: Path, _out: str) -> None:
        for path in paths:
            full = (home / path[2:]) if path.startswith("~/") else cwd / path
            assert full.exists(), f"{full} missing"

    return check


def _says(*words: str) -> Check:
    def check(_cwd: Path, _home: Path, out: str) -> None:
        for word in words:
            assert word in out, f"{word!r} not in output:\n{out}"

    return check


def _all(*checks: Check) -> Check:
    def check(cwd: Path, home: Path, out: str) -> None:
        for each in checks:
            each(cwd, home, out)

    return check


def _registry(cwd: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{cwd / 'adkd-runs' / 'mlflow.db'}"  # the embedded store the commands use
    return MlflowClient(uri, registry_uri=uri)


def _versions(category: str, count: int) -> Check:
    def check(cwd: Path, _home: Path, _out: str) -> None:
        versions = _registry(cwd).search_model_versions(f"name='adkd-{category}'")
        assert len(versions) == count, f"adkd-{category} has {len(versions)} versions, not {count}"

    return check


def _alias(category: str, alias: str, version: str) -> Check:
    def check(cwd: Path, _home: Path, _out: str) -> None:
        held = _registry(cwd).get_registered_model(f"adkd-{category}").aliases.get(alias)
        assert str(held) == version, f"adkd-{category}@{alias} is version {held}, not {version}"

    return check


def _predictions(out: str, images: str) -> Check:
    """One CSV row and one overlay per image under ``images``."""

    def check(cwd: Path, _home: Path, _out: str) -> None:
        n_images = len(list((cwd / images).rglob("*.png")))
        rows = (cwd / out / "predictions.csv").read_text().splitlines()
        assert n_images > 0 and len(rows) == 1 + n_images, (n_images, rows[:3])
        assert len(list((cwd / out / "overlays").iterdir())) == n_images

    return check


def _tiled(run_dir: str, tile: int) -> Check:
    """The exported model carries its tiling: ``tile`` px tiles."""

    def check(cwd: Path, _home: Path, _out: str) -> None:
        from adkd.pipelines.export.onnx_export import read_metadata

        tiling = read_metadata(cwd / run_dir / "model.onnx").get("tiling") or {}
        assert tiling.get("tile") == tile, tiling

    return check


def _benchmark_report(grid: str, category: str) -> Check:
    """The report the command names holds a row per row of the shipped grid, each with a ``category`` cell."""

    def check(cwd: Path, _home: Path, out: str) -> None:
        reports = list(cwd.glob("adkd-runs/all-*/benchmark.json"))  # the run's folder, its default --out
        assert len(reports) == 1 and "benchmark.md" in out, (reports, out)
        report = json.loads(reports[0].read_text())
        labels = [r["label"] for r in tomllib.loads((GRIDS / f"{grid}.toml").read_text())["rows"]]
        assert [r["label"] for r in report["rows"]] == labels
        assert all(r["categories"][category]["status"] == "FINISHED" for r in report["rows"]), report["rows"]

    return check


PROMISES: list[tuple[str, Check]] = [
    ("adkd data synth demo-data", _files("demo-data/weave/train/good", "demo-data/disc/ground_truth")),
    ("adkd data validate demo-data", _files("adkd-runs/data-validation/data_docs/index.html")),
    ("adkd data download mvtec ~/mvtec", _files("~/mvtec/bottle/train/good", "~/mvtec/cable/train/good")),
    ("adkd data download cifar10 ~/cifar", _files("~/cifar/airplane/test/anomaly", "~/cifar/truck/train/good")),
    ("adkd data import folder my-data", _files("my-data/parts/train/good", "my-data/parts/test/scratch")),
    (
        "adkd train --category disc",
        _all(_files("adkd-runs/mlflow.db", "adkd-runs/train/mrkd/disc/model.onnx"), _versions("disc", 1)),
    ),
    ("adkd train --all-categories", _all(_says("image AUROC", "disc", "weave"), _versions("disc", 2))),
    ("adkd registry list", _says("adkd-disc", "adkd-weave")),
    ("adkd registry promote disc --version 1", _alias("disc", "production", "1")),
    ("adkd registry promote disc --version 2", _alias("disc", "production", "2")),
    (
        "adkd registry rollback disc",
        _all(_says("adkd-disc@production: version 2 → 1 (rolled back)"), _alias("disc", "production", "1")),
    ),
    ("adkd predict", _predictions("predictions", "demo-data/disc/test")),
    ("adkd monitor disc", _says("verdicts", "report:")),
    ("adkd tune", _says("best trial", "train it with: adkd train --category disc --model mrkd --preset cpu-smoke")),
    ("adkd benchmark --list", _says("seed-mrkd-table1-3", "seed-mrkd-table6")),
    ("adkd benchmark seed-mrkd-table1-3", _benchmark_report("seed-mrkd-table1-3", "bottle")),
    (
        "adkd train -m stfpm -c disc --data demo-data --preset cpu-smoke --set tiling.tile_size=32",
        _tiled("adkd-runs/train/stfpm/disc", 32),
    ),
]
# Commands that serve until stopped: run by _ui and _station, which check what they serve.
SERVED = ("adkd ui", "adkd station")


def test_readme_commands_parse() -> None:
    first, tour = readme_blocks(README.read_text())
    assert first[:2] == ["make demo", "make test"]
    assert tour[0] == "source .venv/bin/activate" and len(tour) >= 10
    assert any(c.startswith("adkd train --all-categories") for c in tour)
    assert any("tiling.tile_size" in c for c in tour)  # the high-resolution section's command runs too
    promised = [prefix for prefix, _ in PROMISES] + list(SERVED)
    assert all(any(c.startswith(p) for c in tour) for p in promised), [
        p for p in promised if not any(c.startswith(p) for c in tour)
    ]


@pytest.mark.slow
def test_readme_runs_as_typed(tmp_path: Path, file_server: FileServer) -> None:
    first, tour = readme_blocks(README.read_text())
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    (cwd / "adkd.toml").write_text("[train]\nepochs = 1\n")  # see the module's docstring
    env = _env(home)
    # `make test` is this suite; `make demo` = install (done: we run in its venv) + its recipe's adkd command.
    assert any("pytest" in line for line in _make_target("test"))
    demo = [line for line in _make_target("demo") if "adkd" in line]
    assert demo == ["$(BIN)/adkd demo"], demo
    assert "make demo" in first
    done = _run("adkd demo", cwd, env)
    assert "image AUROC" in done.stdout and "adkd ui" in done.stdout
    _assert_quiet("adkd demo", done)

    checked = set()
    for command in tour:
        if command == "source .venv/bin/activate":
            assert "VENV := .venv" in (REPO / "Makefile").read_text()  # the venv make install builds
            continue
        if command.startswith(SERVED):
            (_ui if command.startswith("adkd ui") else _station)(command, cwd, env)
            checked.update(p for p in SERVED if command.startswith(p))
            continue
        if command.startswith("adkd data download mvtec"):
            sums = tmp_path / "SHA256SUMS"
            lines = [
                f"{_serve_mvtec(file_server, tmp_path / c, c, like)}  {c}.tar.xz"
                for c, like in (("bottle", "disc"), ("cable", "chip"))
            ]
            sums.write_text("\n".join(lines) + "\n")
            _run(f"{command} --url-base {file_server.url} --checksums {sums}", cwd, env)
        if command.startswith("adkd data download cifar10"):  # the shared subset in the official format
            md5 = official_archive(file_server.root / ARCHIVE, per_class=2)
            _run(f"{command} --url-base {file_server.url} --md5 {md5}", cwd, env)
        done = _run(command, cwd, env)
        if command.startswith(("adkd train", "adkd predict", "adkd registry")):
            _assert_quiet(command, done)
        for prefix, check in PROMISES:
            if command.startswith(prefix):
                check(cwd, home, done.stdout + done.stderr)
                checked.add(prefix)
    assert checked == {prefix for prefix, _ in PROMISES} | set(SERVED), "a promised command left the README's tour"
