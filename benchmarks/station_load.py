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
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent))

from serve_load import _free_port, _percentile, train_tiny_model  # noqa: E402  (the sibling script)


def start_station(env: dict[str, str], cwd: Path, port: int, log: Path) -> subprocess.Popen:
    """`adkd station disc/1` on 127.0.0.1:port, waited for until /health answers (at most 5 minutes)."""
    cmd = [str(BIN / "adkd"), "station", "disc/1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"adkd station exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"adkd station did not answer within 300 s; see {log}")


def _client(url: str, images: list[tuple[str, bytes]], n: int, offset: int) -> list[tuple[float, int, float, str]]:
    """One client: ``n`` uploads one after another; (seconds, HTTP status or 0, station ms, error) each."""
    out = []
    with requests.Session() as session:
        for i in range(n):
            name, data = images[(offset + i) % len(images)]
            t0 = time.perf_counter()
            try:
                resp = session.post(url, data={"category": "disc"}, files=[("files", (name, data))], timeout=120)
                body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                ok = resp.status_code == 200 and len(body.get("results", [])) == 1 and not body.get("errors")
                station_ms = body["results"][0]["latency_ms"] if ok else float("nan")
                status, error = (200, "") if ok else (resp.status_code or -1, resp.text[:200])
            except requests.RequestException as exc:
                status, station_ms, error = 0, float("nan"), str(exc)[:200]
            out.append((time.perf_counter() - t0, status, station_ms, error))
    return out


def _stats(values: list[float]) -> dict[str, float]:
    values = values or [float("nan")]
    return {
        "p50": round(_percentile(values, 50), 1),
        "p90": round(_percentile(values, 90), 1),
        "p99": round(_percentile(values, 99), 1),
        "mean": round(statistics.fmean(values), 1),
        "max": round(max(values), 1),
    }


def run_load(url: str, images: list[tuple[str, bytes]], clients: int, per_client: int, warmup: int) -> dict:
    _client(url, images, warmup, 0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda c: _client(url, images, per_client, c * 7), range(clients)))
    wall = time.perf_counter() - t0
    flat = [r for rs in results for r in rs]
    ok = [r for r in flat if r[1] == 200]
    errors = [(status, err) for _, status, _, err in flat if status != 200]
    return {
        "uploads": len(flat),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(ok) / wall, 2),
        "round_trip_ms": _stats([1000 * r[0] for r in ok]),
        "station_ms": _stats([r[2] for r in ok]),
    }


def logged_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM station_verdicts").fetchone()[0])


def markdown(result: dict[str, Any]) -> str:
    meta, load = result["meta"], result["load"]
    rt, st = load["round_trip_ms"], load["station_ms"]
    return "\n".join(
        [
            f"`{meta['command']}`",
            "",
            f"`adkd station disc/1` (one uvicorn process, SQLite verdict log, flagged parts and "
            f"{100 * meta['keep_passed']:.0f} % of passed ones kept in a folder), {meta['image_size']} px PNG "
            f"images, {meta['clients']} clients x {meta['per_client']} uploads to POST /api/inspect, one image "
            f"per upload; {meta['machine']}, load average {meta['loadavg']} at start, {meta['loadavg_end']} at the end "
            "(other work shared the machine). Round trip: the client's "
            "time for one upload; station: decode + score, as the verdict log records it.",
            "",
            "| uploads | errors | rows logged | round trip p50 ms | p90 ms | p99 ms | max ms | station p50 ms "
            "| station p99 ms | uploads/s | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {load['uploads']} | {load['errors']} | {result['rows_logged']} of {result['rows_expected']} "
            f"| {rt['p50']} | {rt['p90']} | {rt['p99']} | {rt['max']} | {st['p50']} | {st['p99']} "
            f"| {load['throughput_per_s']} | {load['wall_s']} |",
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

    port = _free_port()
    log = work / "station.log"
    station = start_station(env, work, port, log)
    try:
        from PIL import Image

        size = "x".join(str(v) for v in Image.open(files[0]).size)
        load_before = os.getloadavg()
        load = run_load(f"http://127.0.0.1:{port}/api/inspect", images, args.clients, args.uploads, args.warmup)
    finally:
        station.terminate()
        station.wait(timeout=60)
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
        "loadavg": " / ".join(f"{v:.1f}" for v in load_before),
        "loadavg_end": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    expected = args.warmup + load["ok"]
    result = {"meta": meta, "load": load, "rows_logged": rows, "rows_expected": expected}
    tag = args.tag or f"c{args.clients}x{args.uploads}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"station_load-{tag}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    if args.write_results:
        from train_speed import write_section  # the sibling script

        write_section(f"station_load-{tag}", "## The inspection station under load (issue 26)\n\n" + text + "\n")
    print(text)
    sys.exit(1 if load["errors"] or rows != expected else 0)


if __name__ == "__main__":
    main()
