"""What an `adkd` command spends ending, with the exit hook of `adkd.cli.main.run` and without it.

    .venv/bin/python benchmarks/cli_exit.py [--repeats 3] [--tag cpu2]

Each command runs as a fresh interpreter through ``run()``, as the console script does, in a scratch folder (a
synthesized category, tracking off). An exit handler registered before adkd's own runs last and stamps the time;
the seconds from that stamp to the process's end are CPython's shutdown (clearing modules, its collections);
the hook's own collection runs before the stamp, so only the wall time counts it.
"without" replaces the hook with a no-op before ``run()``. After one unrecorded run of each command (GX's memory of
the data, the store's schema), the two alternate, each first in every other round. Writes
benchmarks/results/cli_exit-<tag>.json and a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

_CHILD = """
import atexit, sys, time
stamp = sys.argv[1]
atexit.register(lambda: open(stamp, "w").write(repr(time.time())))
import adkd.cli.main as main
if sys.argv[2] == "without":
    main._spare_the_exit_collections = lambda: None
sys.argv = ["adkd", *sys.argv[3:]]
main.run()
"""

COMMANDS = {
    "adkd train (stfpm cpu-smoke, tracking off)": [
        "train", "--category", "disc", "--data", "data", "--model", "stfpm", "--preset", "cpu-smoke", "--no-tracking",
    ],
    "adkd registry list (local store)": ["registry", "list"],
    "adkd data validate": ["data", "validate", "data"],
}  # fmt: skip


def one(variant: str, args: list[str], cwd: Path) -> dict[str, float]:
    stamp = cwd / "stamp"
    stamp.unlink(missing_ok=True)
    env = {**os.environ, "ADKD_CACHE_DIR": str(cwd / "cache")}
    started = time.time()
    done = subprocess.run([sys.executable, "-c", _CHILD, str(stamp), variant, *args], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"adkd {' '.join(args)} failed: {done.stderr[-2000:]}")
    return {"wall_s": ended - started, "shutdown_s": ended - float(stamp.read_text())}


def main() -> None:
    from results_md import write_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tag", default="cpu2")
    args = p.parse_args()
    load = os.getloadavg()
    samples: dict[str, dict[str, list[dict[str, float]]]] = {name: {"adkd": [], "without": []} for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="adkd-cli-exit-") as tmp:
        cwd = Path(tmp)
        synth = [Path(sys.executable).with_name("adkd"), "data", "synth", "data", "--categories", "disc"]
        subprocess.run(synth, cwd=cwd, check=True, capture_output=True)
        for command in COMMANDS.values():  # first runs: GX's memory of the data, the store's schema, file caches
            one("adkd", command, cwd)
        for repeat in range(args.repeats):
            for name, command in COMMANDS.items():
                for variant in ("adkd", "without")[:: 1 if repeat % 2 == 0 else -1]:
                    samples[name][variant].append(one(variant, command, cwd))
                    print(name, variant, samples[name][variant][-1], flush=True)
    medians = {
        name: {
            v: {k: statistics.median(s[k] for s in runs) for k in ("wall_s", "shutdown_s")} for v, runs in by.items()
        }
        for name, by in samples.items()
    }
    out = REPO / "benchmarks" / "results" / f"cli_exit-{args.tag}.json"
    out.write_text(json.dumps({"samples": samples, "median": medians, "cpus": os.cpu_count(), "load_before": load},
                              indent=2) + "\n")  # fmt: skip
    lines = [
        "### How long an `adkd` command takes to end",
        "",
        f"Fresh interpreters, {os.cpu_count()} CPUs, load {' / '.join(f'{x:.1f}' for x in load)} before, median of "
        f"{args.repeats} alternating runs; shutdown = from the last exit handler (after adkd's hook) to the process's "
        "end "
        f"(`benchmarks/cli_exit.py --tag {args.tag}`):",
        "",
        "| command | wall, adkd | wall, without the hook | shutdown, adkd | shutdown, without |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {m['adkd']['wall_s']:.2f} s | {m['without']['wall_s']:.2f} s | "
            f"{m['adkd']['shutdown_s']:.2f} s | {m['without']['shutdown_s']:.2f} s |"
            for name, m in medians.items()
        ),
    ]
    write_section(f"cli_exit-{args.tag}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
