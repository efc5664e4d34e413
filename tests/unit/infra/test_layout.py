"""The package's shape: no import cycles (``TYPE_CHECKING`` ones included) between modules or between packages,
imports down the layers, platform/ by subject, a module over 500 lines says why, the environment read in
settings.py only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "adkd"
MAX_LINES = 500
# Modules that write variables a library or a child process reads (each says why where it does).
ENV_WRITERS = {
    "adkd/platform/cluster/jobs.py",  # a Ray job's environment: the settings forwarded to it
    "adkd/platform/console/quiet.py",  # MLflow's log level, for this process and its children
    "adkd/platform/tracking/client.py",  # MLflow's HTTP retry defaults
    "adkd/platform/cluster/connection.py",  # Ray Train's print patch, read by the workers it starts
}
LAYERS = {"models": 0, "pipelines": 1, "platform": 2, "cli": 3}
# The only modules at adkd/platform/'s top level: everything else lives in a subpackage named for its subject.
PLATFORM_ENTRY_POINTS = {"__init__.py", "runs.py"}


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name → file of every module under ``root`` (a package is named by its ``__init__``)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(source: str, name: str, known: set[str]) -> set[str]:
    """Every known module ``source`` imports: at the top, inside functions and under ``TYPE_CHECKING`` alike.

    A ``TYPE_CHECKING`` import is still a dependency: the module is written against the other, so a circle
    through one is a circle.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""  # adkd's imports are absolute
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(root)
    known = set(modules)
    return {name: _imports(path.read_text(), name, known) for name, path in modules.items()}


def _packages(graph: dict[str, set[str]], root: str = "adkd") -> set[str]:
    """The packages among the modules: every dotted prefix that has a submodule."""
    return {name.rsplit(".", 1)[0] for name in graph if "." in name} | {root}


def _child(package: str, module: str) -> str | None:
    """The direct child of ``package`` that holds ``module`` (itself a module or a subpackage), if any."""
    if not module.startswith(package + "."):
        return None
    return package + "." + module[len(package) + 1 :].split(".", 1)[0]


def package_graphs(graph: dict[str, set[str]], root: str = "adkd") -> dict[str, dict[str, set[str]]]:
    """For every package, the import graph among its direct children, a subpackage standing for all it holds.

    ``adkd.platform.tracking`` → ``adkd.platform.registry`` is an edge of ``adkd.platform``'s graph when any
    module under tracking imports any module under registry; an import of a package's own ``__init__`` from
    inside it is no edge.
    """
    out: dict[str, dict[str, set[str]]] = {}
    for package in _packages(graph, root):
        edges: dict[str, set[str]] = {}
        for source, targets in graph.items():
            a = _child(package, source)
            if a is None:
                continue
            edges.setdefault(a, set())
            for target in targets:
                b = _child(package, target)
                if b is not None and b != a:
                    edges[a].add(b)
        out[package] = edges
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) through each circle of ``graph``, found depth first."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def package_cycles(graph: dict[str, set[str]], root: str = "adkd") -> list[list[str]]:
    """Cycles between sibling packages (or a package and a sibling module), at every depth.

    A cycle of plain modules is left to ``find_cycles`` over the modules, which names it already.
    """
    packages = _packages(graph, root)
    return [
        cycle
        for edges in package_graphs(graph, root).values()
        for cycle in find_cycles(edges)
        if any(node in packages for node in cycle)
    ]


def _shown(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles[:10])


def test_no_import_cycle() -> None:
    cycles = find_cycles(_graph())
    assert not cycles, "import cycles: " + _shown(cycles)


def test_no_cycle_between_packages() -> None:
    cycles = package_cycles(_graph())
    assert not cycles, "import cycles between packages: " + _shown(cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "adkd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "adkd"


def test_a_type_checking_circle_is_a_cycle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from adkd.b import B\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adkd.a import A\nB = 1\n",
        },
    )
    assert find_cycles(_graph(package)) == [["adkd.a", "adkd.b", "adkd.a"]]


def test_a_circle_between_packages_is_found_though_no_two_modules_form_one(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "platform/__init__.py": "",
            "platform/tracking/__init__.py": "",
            "platform/tracking/session.py": "from adkd.platform.registry.versions import register\n",
            "platform/tracking/labels.py": "LABEL = 1\n",
            "platform/registry/__init__.py": "",
            "platform/registry/versions.py": "def register():\n    from adkd.platform.tracking.labels import LABEL\n",
        },
    )
    graph = _graph(package)
    assert not find_cycles(graph)
    assert package_cycles(graph) == [["adkd.platform.registry", "adkd.platform.tracking", "adkd.platform.registry"]]


def test_imports_point_down_the_layers() -> None:
    upward = []
    for name, targets in _graph().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue
        for target in targets:
            layer = target.split(".")[1] if len(target.split(".")) > 1 else ""
            if layer in LAYERS and LAYERS[layer] > LAYERS[parts[1]]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that run back up: " + ", ".join(upward[:10])


def test_no_command_module_imports_another() -> None:
    graph = _graph()
    commands = {n for n in graph if n.startswith("adkd.cli.") and n.endswith("_cmd")}
    crossing = [f"{n} -> {t}" for n in commands for t in graph[n] if t in commands]
    assert not crossing, crossing


def test_platform_holds_subpackages_and_its_entry_points_only() -> None:
    platform = PACKAGE / "platform"
    loose = sorted(p.name for p in platform.glob("*.py") if p.name not in PLATFORM_ENTRY_POINTS)
    assert not loose, f"modules at adkd/platform/'s top level (move each into the subpackage of its subject): {loose}"
    for entry in PLATFORM_ENTRY_POINTS:
        assert (platform / entry).is_file(), f"adkd/platform/{entry} is gone: update PLATFORM_ENTRY_POINTS"


def test_every_platform_package_says_what_it_holds() -> None:
    packages = [PACKAGE / "platform", *(p.parent for p in (PACKAGE / "platform").glob("*/__init__.py"))]
    assert len(packages) > 5
    silent = [
        str(p.relative_to(PACKAGE.parent))
        for p in packages
        if not (ast.get_docstring(ast.parse((p / "__init__.py").read_text())) or "").strip()
    ]
    assert not silent, f"packages whose __init__.py has no docstring saying what they hold: {silent}"
    orphans = [
        str(p.relative_to(PACKAGE.parent))
        for p in (PACKAGE / "platform").iterdir()
        if p.is_dir() and p.name != "__pycache__" and not (p / "__init__.py").is_file()
    ]
    assert not orphans, f"folders under adkd/platform/ without __init__.py: {orphans}"


def test_a_module_over_500_lines_says_why() -> None:
    """About 500 lines is a prompt to look: a longer module keeps one idea whole and its docstring says so
    (a sentence naming the "500 lines" it passes and why splitting would scatter the idea)."""
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len((text := p.read_text()).splitlines())) > MAX_LINES
        and f"{MAX_LINES} lines" not in (ast.get_docstring(ast.parse(text)) or "")
    }
    assert not long, f"modules over {MAX_LINES} lines whose docstring does not say why: {long}"


def test_the_environment_is_read_in_settings_only() -> None:
    readers = []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel == "adkd/settings.py" or rel in ENV_WRITERS:
            continue
        text = path.read_text()
        if "os.environ" in text or "os.getenv" in text or "getenv(" in text:
            readers.append(rel)
    assert not readers, f"modules that read the environment outside adkd/settings.py: {readers}"
    for rel in ENV_WRITERS:  # each writer says why, next to the write
        lines = (PACKAGE.parent / rel).read_text().splitlines()
        writes = [i for i, line in enumerate(lines) if "os.environ" in line]
        assert writes, f"{rel} no longer touches the environment: drop it from ENV_WRITERS"
        for i in writes:
            context = "\n".join(lines[max(0, i - 3) : i + 1])
            assert "#" in context, f"{rel}:{i + 1} writes the environment without a comment saying why"
