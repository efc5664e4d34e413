"""Suite-wide: how the tests are spread over xdist workers, and isolation between tests in one worker.

`mlflow.set_tracking_uri` / `set_registry_uri` also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into
os.environ, so an in-process test would otherwise point later subprocesses (adkd, mlflow serve) at a
server that has already stopped.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from adkd.settings import DEFAULT_CACHE_DIR

_PREFIXES = ("MLFLOW_", "ADKD_", "RAY_ADDRESS", "AWS_")
_ABSENT = pytest.StashKey[list[str]]()

# Modules that start Ray Train clusters (a dozen processes per category), costliest first (setup + calls
# measured in `make test`). Each module is its own xdist group (`--dist loadgroup` = loadfile here) and they
# are handed out first, right after the README test, so the two workers share them: all in one group they ran
# one after another on one worker, which then ran 9 minutes alone after the other had finished (21.6 min in
# all). Two at a time is the load the README test's Ray commands beside a Ray module always put on the box.
RAY_MODULES = (
    "test_cluster.py",
    "test_benchmark.py",
    "test_multinode.py",
    "test_gpu_check.py",  # its moonshot dry run trains two categories through `adkd train --categories`
    "test_tiling_positions.py",
    "test_cluster_submit.py",
    "test_cluster_ddp.py",
    "test_gpu_paths.py",
)


_SUITE_CACHE = pytest.StashKey[Path]()


def _suite_cache(config: pytest.Config) -> None:
    """One adkd cache for the whole run, shared by its workers and every process they start, removed at its end.

    Without it the tests that set no ``ADKD_CACHE_DIR`` wrote into ~/.cache/adkd (GX's remembered results,
    MLflow's schema template, OpenVINO's compiled models), so a second run on one machine was faster than a
    first one (what CI always runs) and the user's own cache filled with test data. ``ADKD_GATE_MEMO``
    points the modules that keep a cache of their own at the run's memory too: GX's results depend only on the
    files' facts and the rules (the memory's key), so a data set synthesised alike in two modules is checked
    by GX once. The README test clears every ADKD_ variable and so runs as a first-time user's machine would.
    """
    if hasattr(config, "workerinput") or "ADKD_CACHE_DIR" in os.environ:
        return  # workers inherit the controller's; a cache the caller chose is kept
    cache = Path(tempfile.mkdtemp(prefix="adkd-suite-cache-"))
    config.stash[_SUITE_CACHE] = cache
    os.environ["ADKD_CACHE_DIR"] = str(cache)
    os.environ.setdefault("ADKD_GATE_MEMO", str(cache / "data-gate"))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and the collection built (torch's, MLflow's, ... half a million objects) out of the
    garbage collector's reach: they live as long as the process.

    A full collection walks every tracked object: 0.3 s each with torch, torchvision, MLflow and scikit-learn
    loaded, and pytest runs five at its end (to report unraisable exceptions), the interpreter more at exit.
    Objects the tests create stay collectable as before.
    """
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    gc.collect()  # what the tests left behind, while pytest still reports unraisable exceptions
    gc.freeze()  # pytest's five collections at its cleanup and the interpreter's at exit then skip it all
    cache = config.stash.get(_SUITE_CACHE, None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker (and every process it starts: adkd commands, Ray workers) gets its share of the
    cores as OpenMP threads, unless OMP_NUM_THREADS is set already.

    torch's default is one thread per core in every process; with two workers on two cores that is four
    spinning OpenMP threads on two cores. Measured here: two `adkd train` runs side by side took 32.8 s with
    the default and 12.6 s with OMP_NUM_THREADS=1.
    """
    _suite_cache(config)
    workers = getattr(config, "workerinput", {}).get("workercount")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // int(workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # read at torch's import; set it directly when it is already in
        sys.modules["torch"].set_num_threads(threads)


# Modules that share the session-scoped ``promoted`` model and its ``served`` server (tests/integration/conftest.py):
# one group, so one worker trains, registers and serves it once. As three groups each worker built its own (three
# trainings and two servers, measured: ~36 s of setup in each module). No "]" in a group name: xdist then reads the
# "@group" suffix as part of a parametrized test's id and schedules each test on its own.
SHARED_FIXTURE_GROUPS = {
    "tests/integration/test_predict.py": "tests/integration/promoted-model",
    "tests/integration/test_registry_display.py": "tests/integration/promoted-model",
    "tests/integration/test_serving.py": "tests/integration/promoted-model",
}


def _group(item: pytest.Item) -> str:
    module = item.path.relative_to(item.config.rootpath).as_posix()
    return SHARED_FIXTURE_GROUPS.get(module, module)


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as each test is collected, i.e. before xdist reads the marks in pytest_collection_modifyitems.
    item.add_marker(pytest.mark.xdist_group(_group(item)))


# The longest single test starts first, then the Ray modules, costliest first, then the other groups, most
# tests first: with the rest spread around them, the slowest worker does not pick up a long module near the
# end. xdist hands out groups in collection order only with --no-loadscope-reorder (`make test`); by default it
# sorts them by their number of tests, which started the README test (2 tests) among the last.
LONGEST_FIRST = ("tests/integration/test_readme.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sizes: dict[str, int] = {}
    for item in items:
        sizes[_group(item)] = sizes.get(_group(item), 0) + 1

    def rank(group: str) -> tuple[int, int]:
        if group in LONGEST_FIRST:
            return 0, 0
        if Path(group).name in RAY_MODULES:
            return 1, RAY_MODULES.index(Path(group).name)
        return 2, -sizes[group]

    order = sorted(sizes, key=rank)
    # xdist gives each worker one group, then a second to every worker with at most two tests still to run:
    # the README test's worker (2 tests) takes the group after the first round at once and runs it only when the
    # README test ends, 12 minutes in. Measured: test_multinode (84 s) waited there and started at 715 s. So
    # the group in that place is a light one (a unit module) with at least two tests: xdist asks again each time
    # a test ends, and when the README's quick test ended first, a one-test group there left "two to run" and the
    # worker took a third group at once (measured: test_multinode again, 826-945 s; with -n 4 test_gpu_check,
    # which then ran last, 1006-1075 s).
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if 0 < workers < len(order) and order[0] in LONGEST_FIRST:
        units = [g for g in order if rank(g)[0] == 2 and g.startswith("tests/unit/") and sizes[g] >= 2]
        light = min(units, key=lambda g: sizes[g], default=None)
        if light is not None:
            order.remove(light)
            order.insert(workers, light)
    place = {group: i for i, group in enumerate(order)}
    items.sort(key=lambda item: place[_group(item)])  # stable: the order inside each group is unchanged


def _restore_service_env(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(_PREFIXES)]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)
    try:
        import mlflow.tracking
    except ImportError:
        return
    # The process-wide URIs set by mlflow.set_tracking_uri / set_registry_uri.
    mlflow.tracking._tracking_service.utils._tracking_uri = None
    mlflow.tracking._model_registry.utils._registry_uri = None


@pytest.fixture(scope="module", autouse=True)
def _module_service_env() -> Iterator[None]:
    """A module's fixtures (a tracked training, a promoted model) may set MLFLOW_* for its tests; the next module
    in this worker starts without them (a leaked MLFLOW_REGISTRY_URI sent a later `mlflow models serve` to
    another module's registry: "Registered Model adkd-disc not found")."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_PREFIXES)}
    yield
    _restore_service_env(saved)


@pytest.fixture(autouse=True)
def _isolated_service_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_PREFIXES)}
    yield
    _restore_service_env(saved)


@pytest.fixture(scope="module", autouse=True)
def _no_ray_left_running() -> Iterator[None]:
    """Every module starts without an in-process Ray and must end without one.

    A module that starts Ray owns it: a leak fails that module (at its last test's teardown) and is shut
    down here, so the next module starts clean whatever the order (the Ray modules ``assert`` this, never skip).
    """
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("this module left an in-process Ray running (ray.init without ray.shutdown)", pytrace=False)


REPO = Path(__file__).resolve().parents[1]
# What adkd and MLflow write into the working folder by default. The suite writes only under tmp paths, so
# none of these may appear in the repository during a run (they are git-ignored: git status would not tell).
DEFAULT_OUTPUTS = ("adkd-runs", "mlruns", "mlflow.db", "demo-data", "adkd-predictions", "predictions", "my-data")


_USER_CACHE_STATE = pytest.StashKey[dict[str, int]]()


def _folder_state(root: Path) -> dict[str, int]:
    """The modification times of adkd's user cache and of the folders in it (an entry added or removed shows)."""
    folders = [root, *(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    return {str(p): p.stat().st_mtime_ns for p in folders}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_ABSENT] = [name for name in DEFAULT_OUTPUTS if not (REPO / name).exists()]
    session.config.stash[_USER_CACHE_STATE] = _folder_state(DEFAULT_CACHE_DIR)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # under xdist the controller checks, once
    created = [name for name in session.config.stash.get(_ABSENT, []) if (REPO / name).exists()]
    problems = [f"the suite wrote into the repository: {', '.join(created)}"] if created else []
    before, after = session.config.stash.get(_USER_CACHE_STATE, {}), _folder_state(DEFAULT_CACHE_DIR)
    changed = sorted(path for path in after.keys() | before.keys() if after.get(path) != before.get(path))
    if changed:
        problems.append(f"the suite wrote into the user's cache: {', '.join(changed[:10])}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for problem in problems:
                reporter.write_sep("=", f"{problem} (tests write under tmp paths only)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI=true a skipped test fails: a missing ../shared, PostgreSQL or a busy Ray must not pass as green.

    Only `gpu`-marked tests may skip there (CI machines have no CUDA).
    """
    outcome = yield
    report = outcome.get_result()
    if not (_under_ci() and report.skipped) or hasattr(report, "wasxfail") or item.get_closest_marker("gpu"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where every prerequisite must be present: {reason}"
