"""The inspection station under a bounded load: concurrent clients uploading images to `adkd station`.

    .venv/bin/python benchmarks/station_load.py [--clients 4] [--uploads 200] [--keep-passed 0.05]
                                                [--write-results]

Trains a tiny model first (`adkd data synth` + `adkd train --preset cpu-smoke`, 64 px, registered as adkd-disc
v1 in a temporary store, as benchmarks/serve_load.py does), starts `adkd station disc/1` on 127.0.0.1 (one
uvicorn process, SQLite verdict log, kept images in a folder) and stops it at the end. Each client sends
--uploads uploads one after another to POST /api/inspect (one PNG image of the test split each, multipart, as
the page's form sends it); after a warm-up the script reports p50/p90/p99 of the round trip, the station's own
per-image latency (decode + score, what the verdict log records), throughput and errors, and checks that the
log holds one row per upload. Writes benchmarks/results/station_load-<tag>.json and, with --write-results,
a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent))

from serve_load import Send, free_port, latency_stats, run_load, start_and_wait, train_tiny_model  # noqa: E402

from adkd.platform.services.process_tree import stop_tree  # noqa: E402


def upload(url: str, images: list[tuple[str, bytes]]) -> Send:
    """Upload i: one image to POST /api/inspect as the page's form sends it; (status, error, station ms)."""

    def send(session: requests.Session, i: int) -> tuple[int, str, float]:
        name, data = images[i % len(images)]
        resp = session.post(url, data={"category": "disc"}, files=[("files", (name, data))], timeout=120)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code == 200 and len(body.get("results", [])) == 1 and not body.get("errors"):
            return 200, "", body["results"][0]["latency_ms"]
        return (-1 if resp.status_code == 200 else resp.status_code), resp.text[:200], float("nan")

    return send


def logged_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM station_verdicts").fetchone()[0])


def markdown(result: dict[str, Any]) -> str:
    meta, load = result["meta"], result["load"]
    rt, st = load["latency_ms"], load["station_ms"]
    return "\n".join(
        [
            f"`{meta['command']}`",
            "",
            f"`adkd station disc/1` (one uvicorn process, SQLite verdict log, flagged parts and "
            f"{100 * meta['keep_passed']:.0f} % of passed ones kept in a folder), {meta['image_size']} px PNG "
            f"images, {meta['clients']} clients x {meta['per_client']} uploads to POST /api/inspect, one image "
            f"per upload; {meta['machine']}, load average {meta['loadavg']} at the start of the load, "
            f"{meta['loadavg_end']} at its end (1/5/15-minute averages). Round trip: the client's time for one "
            "upload; station: decode + score, as the verdict log records it.",
            "",
            "| uploads | errors | rows logged | round trip p50 ms | p90 ms | p99 ms | max ms | station p50 ms "
            "| station p99 ms | uploads/s | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {load['requests']} | {load['errors']} | {result['rows_logged']} of {result['rows_expected']} "
            f"| {rt['p50']} | {rt['p90']} | {rt['p99']} | {rt['max']} | {st['p50']} | {st['p99']} "
            f"| {load['throughput_rps']} | {load['wall_s']} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=200, help="Uploads per client.")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--keep-passed", type=float, default=0.05, help="station.keep_passed during the run.")
    parser.add_argument("--tag", default=None, help="Names the results file and RESULTS.md section.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Folder of the JSON results.")
    parser.add_argument("--write-results", action="store_true", help="Update benchmarks/RESULTS.md.")
    parser.add_argument("--keep-work", action="store_true", help="Keep the temporary store and station log.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adkd-station-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADKD_STATION_", "MLFLOW_"))}
    env.update(ADKD_RUNS_DIR=str(work / "runs"), ADKD_CACHE_DIR=str(work / "cache"), COLUMNS="200")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    (work / "adkd.toml").write_text(f"[station]\nkeep_passed = {args.keep_passed}\nrefresh_s = 0\n")
    print(f"training a tiny model in {work} ...", flush=True)
    _, test_dir = train_tiny_model(work, env)
    files = sorted(test_dir.rglob("*.png"))[:32]
    images = [(p.name, p.read_bytes()) for p in files]

    port = free_port()
    cmd = [str(BIN / "adkd"), "station", "disc/1", "--port", str(port)]
    station = start_and_wait(cmd, f"http://127.0.0.1:{port}/health", env, work / "station.log", cwd=work)
    try:
        from PIL import Image

        size = "x".join(str(v) for v in Image.open(files[0]).size)
        load_start = os.getloadavg()
        send = upload(f"http://127.0.0.1:{port}/api/inspect", images)
        load, station_ms = run_load(send, args.clients, args.uploads, args.warmup)
        load["station_ms"] = latency_stats(station_ms)
        load_end = os.getloadavg()
    finally:
        stop_tree(station.pid, reap=station)
    rows = logged_rows(work / "runs" / "station.db")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "command": f"benchmarks/station_load.py --clients {args.clients} --uploads {args.uploads}",
        "image_size": size,
        "clients": args.clients,
        "per_client": args.uploads,
        "keep_passed": args.keep_passed,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "loadavg": " / ".join(f"{v:.1f}" for v in load_start),
        "loadavg_end": " / ".join(f"{v:.1f}" for v in load_end),
    }
    expected = args.warmup + load["ok"]
    result = {"meta": meta, "load": load, "rows_logged": rows, "rows_expected": expected}
    tag = args.tag or f"c{args.clients}x{args.uploads}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"station_load-{tag}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    if args.write_results:
        from results_md import write_section  # the sibling script

        write_section(f"station_load-{tag}", "## The inspection station under load (issue 26)\n\n" + text + "\n")
    print(text)
    sys.exit(1 if load["errors"] or rows != expected else 0)


if __name__ == "__main__":
    main()
