"""What one `make test` costs on this machine: wall clock, the machine's busy CPU seconds, and the outcome.

    .venv/bin/python benchmarks/suite_time.py [--repeats 1] [--tag cpu2] [-- COMMAND ...]

The suite is CPU-bound on a small machine (both cores busy nearly all the time), so its wall clock is about the
busy CPU seconds over the cores, and the same code runs slower when the machine itself is slower: each run
records both, read from the ``cpu`` line of /proc/stat before and after (user, nice, system, irq, softirq and
steal count as busy), with the load averages before. Run it with nothing else on the machine. The command
(default ``make test``) runs from the repository root; pytest's summary line gives the outcome. Writes
benchmarks/results/suite_time-<tag>.json and a RESULTS.md section; each run's whole output goes to
``--log-dir`` (default: the temporary folder), its failed tests into the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
HZ = os.sysconf("SC_CLK_TCK")
BUSY = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest time is inside user already)
SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed).*?) in ([\d.]+)s", re.M)


def cpu_times() -> list[int]:
    """The machine's ``cpu`` line of /proc/stat, in clock ticks."""
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:]]


def cpu_model() -> str:
    """The processor's name and whether it has native bf16 (avx512_bf16 or AMX): one machine runs the suite 1.7x
    slower than another of the same core count (an AMD EPYC with avx2 only against one with avx512_bf16)."""
    name, flags = "unknown", set()
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return f"{name}, {'native bf16' if native else 'no native bf16'}"


def run_once(command: list[str], log: Path) -> dict[str, Any]:
    load = os.getloadavg()
    before, started = cpu_times(), time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall, after = time.monotonic() - started, cpu_times()
    delta = [b - a for a, b in zip(before, after)]
    output = proc.stdout + proc.stderr
    log.write_text(output)
    summaries = SUMMARY.findall(output)
    outcome, pytest_s = summaries[-1] if summaries else ("no pytest summary", "nan")
    failed = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "pytest_s": float(pytest_s),
        "outcome": outcome,
        "busy_cpu_s": sum(delta[i] for i in BUSY) / HZ,
        "all_cpu_s": sum(delta[:8]) / HZ,
        "load_before": [round(x, 2) for x in load],
        "failed": failed[:10],
        "log": str(log),
    }


def main() -> None:
    from results_md import write_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--tag", default="cpu2")
    p.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()), help="where each run's output goes")
    p.add_argument("command", nargs="*", default=["make", "test"], help="what to time (default: make test)")
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)  # before the run: a 20-minute suite's output must not be lost
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    runs = []
    for i in range(args.repeats):
        runs.append(run_once(args.command, args.log_dir / f"suite_time-{args.tag}-{i + 1}.log"))
        print(json.dumps(runs[-1]), flush=True)
    meta = {"command": " ".join(args.command), "commit": commit.stdout.strip(), "cpus": os.cpu_count(),
            "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    out = REPO / "benchmarks" / "results" / f"suite_time-{args.tag}.json"
    out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    lines = [
        f"### `{meta['command']}` on this machine",
        "",
        f"{meta['cpus']} CPUs ({meta['cpu']}), commit {meta['commit']}, {meta['date']}, one run at a time with "
        f"nothing else running (`benchmarks/suite_time.py --repeats {args.repeats} --tag {args.tag}`):",
        "",
        "| run | wall | pytest | outcome | busy CPU-s | busy / all CPU | load before (1/5/15 min) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {i} | {int(r['wall_s'] // 60)} min {int(r['wall_s'] % 60)} s | {r['pytest_s']:.0f} s | "
            f"{r['outcome']} | "
            f"{r['busy_cpu_s']:.0f} | {r['busy_cpu_s'] / max(r['all_cpu_s'], 1e-9):.0%} | "
            f"{' / '.join(f'{x:.1f}' for x in r['load_before'])} |"
            for i, r in enumerate(runs, start=1)
        ),
    ]
    write_section(f"suite_time-{args.tag}", "\n".join(lines))
    print("\n".join(lines))
    if any(r["rc"] for r in runs):
        raise SystemExit(f"{meta['command']} failed in {sum(1 for r in runs if r['rc'])} of {len(runs)} runs")


if __name__ == "__main__":
    main()
