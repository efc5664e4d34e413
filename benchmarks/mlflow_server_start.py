"""What one `mlflow server` start costs, with MLflow's job runner (its default) and as adkd starts it (off).

    .venv/bin/python benchmarks/mlflow_server_start.py [--repeats 2] [--tag cpu2]

Each start: a fresh SQLite store, the server in its own session, the seconds until ``/health`` answers, then
5 s more and the CPU seconds and the number of processes of that session (read from /proc). The two
environments alternate. Writes benchmarks/results/mlflow_server_start-<tag>.json and a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from adkd.platform.services.process_tree import proc_stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
HZ = os.sysconf("SC_CLK_TCK")


def _session(sid: int) -> tuple[float, int]:
    """CPU seconds and process count of the processes in session ``sid``."""
    members = [fields for _, fields in proc_stats() if int(fields[3]) == sid]
    return sum(int(f[11]) + int(f[12]) for f in members) / HZ, len(members)


def start_once(env: dict[str, str], port: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
               "--artifacts-destination", f"{tmp}/artifacts"]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() - started > 300:
                        raise RuntimeError("mlflow server did not come up") from None
                    time.sleep(0.2)
            up = time.monotonic() - started
            time.sleep(5)
            cpu, count = _session(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"health_s": up, "cpu_s": cpu, "processes": count}


def main() -> None:
    from results_md import write_section

    from adkd.settings import MLFLOW_JOB_EXECUTION_ENV, mlflow_server_env

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--port", type=int, default=5091)
    p.add_argument("--tag", default="cpu2")
    args = p.parse_args()
    base = {k: v for k, v in os.environ.items() if k != MLFLOW_JOB_EXECUTION_ENV}
    envs = {
        "MLflow's default (job runner on)": dict(base),
        "as adkd starts it (job runner off)": mlflow_server_env(base),
    }
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
    for _ in range(args.repeats):
        for name, env in envs.items():
            samples[name].append(start_once(env, args.port))
            print(name, samples[name][-1], flush=True)
    rows = {
        name: {key: statistics.median(s[key] for s in runs) for key in ("health_s", "cpu_s", "processes")}
        for name, runs in samples.items()
    }
    out = REPO / "benchmarks" / "results" / f"mlflow_server_start-{args.tag}.json"
    out.write_text(json.dumps({"samples": samples, "median": rows, "cpus": os.cpu_count()}, indent=2) + "\n")
    lines = [
        "### One `mlflow server` start",
        "",
        f"Fresh SQLite store, {os.cpu_count()} CPUs, median of {args.repeats} alternating starts; CPU and processes of "
        f"the server's session 5 s after `/health` (`benchmarks/mlflow_server_start.py --tag {args.tag}`):",
        "",
        "| server | s to /health | CPU-s | processes |",
        "|---|---|---|---|",
        *(f"| {name} | {r['health_s']:.1f} | {r['cpu_s']:.1f} | {r['processes']:.0f} |" for name, r in rows.items()),
    ]
    write_section(f"mlflow_server_start-{args.tag}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
