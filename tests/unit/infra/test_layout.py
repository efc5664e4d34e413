"""The package's shape: no import cycles, no module over 500 lines, the environment read in settings.py only."""

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


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every adkd module ``path`` imports, at the top or inside functions (type-checking blocks excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""  # adkd's imports are absolute
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, name, known) for name, path in known.items()}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:10])


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
    commands = {n for n in _modules() if n.startswith("adkd.cli.") and n.endswith("_cmd")}
    crossing = [f"{n} -> {t}" for n in commands for t in _graph()[n] if t in commands]
    assert not crossing, crossing


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


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
