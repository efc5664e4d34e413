"""How an `adkd` process ends: its exit handlers' work kept, CPython's shutdown collections spared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# An object with a finalizer in a reference cycle (a writer that finishes its file when collected), with automatic
# collection off so that only exit collects it; the handler registered first runs last and reports the objects
# frozen by then.
PROBE = """
import atexit, gc, sys
from pathlib import Path
atexit.register(lambda: print("frozen", gc.get_freeze_count(), file=sys.stderr))
gc.disable()
class Writer:
    def __init__(self, path):
        self.path, self.self = Path(path), self
    def __del__(self):
        self.path.write_text("every line\\n")
Writer(sys.argv[1])
from adkd.cli.main import run
sys.argv = ["adkd", "--version"]
run()
"""


def test_a_command_finalizes_what_a_cycle_held_and_freezes_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "finished.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "every line\n"
    frozen = [line for line in proc.stderr.splitlines() if line.startswith("frozen ")]
    assert frozen and int(frozen[0].split()[1]) > 1000, proc.stderr
