"""Serving under load: `mlflow models serve` with a registered adkd model, concurrent clients, bad requests.

    .venv/bin/python benchmarks/serve_load.py [--clients 4] [--requests 200] [--model-uri models:/adkd-X/1
                                              --tracking-uri URI] [--workers 1] [--no-maps]

Without --model-uri it trains a tiny model first (`adkd data synth` + `adkd train --preset cpu-smoke`,
64 px, registered as adkd-disc v1 in a temporary store). The server runs on 127.0.0.1 in its own
session and is stopped with its whole process tree at the end. Each client sends --requests requests
one after another (one real PNG image each, base64, the anomaly map in the answer unless --no-maps);
after a warm-up the script reports p50/p90/p99 latency, throughput and errors. Then it sends the bad
requests (corrupt base64, non-image bytes, a 10,000 x 10,000 image, a missing `image` column), records
status and reason, and checks the server still answers. Writes benchmarks/results/serve_load-<tag>.json
and a section of RESULTS.md (with --write-results).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from adkd.platform.services.process_tree import stop_tree

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _adkd(args: list[str], env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "adkd.cli.main", *args], env=env, cwd=cwd, capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"adkd {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def train_tiny_model(work: Path, env: dict[str, str]) -> tuple[str, Path]:
    """A 64 px rd model on synthetic data, registered as adkd-disc v1; (model URI, its test images)."""
    data = work / "synth"
    _adkd(["data", "synth", str(data), "--categories", "disc", "--train", "24", "--test", "16"], env, work)
    _adkd(["train", "--category", "disc", "--data", str(data), "--model", "rd", "--preset", "cpu-smoke",
           "--set", "epochs=1"], env, work)  # fmt: skip
    return "models:/adkd-disc/1", data / "disc" / "test"


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def start_and_wait(
    cmd: list[str], health_url: str, env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """``cmd`` in its own session (output to ``log``), waited for until ``health_url`` answers 200 (at most 5 min)."""
    name = " ".join([Path(cmd[0]).name, *cmd[1:3]])  # "mlflow models serve", "adkd station disc/1"
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(health_url, timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_tree(proc.pid, reap=proc)
    raise SystemExit(f"{name} did not answer within 300 s; see {log}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency_stats(values: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean / max of ``values``, rounded to 0.1 (all NaN when there are none)."""
    values = values or [float("nan")]
    stats = {f"p{q}": _percentile(values, q) for q in (50, 90, 99)}
    return {k: round(v, 1) for k, v in {**stats, "mean": statistics.fmean(values), "max": max(values)}.items()}


# One request: (HTTP status, error text or "", a figure the answer carries or NaN).
Send = Callable[[requests.Session, int], tuple[int, str, float]]


def run_load(send: Send, clients: int, per_client: int, warmup: int) -> tuple[dict[str, Any], list[float]]:
    """Warm up, then ``clients`` concurrent clients x ``per_client`` requests, each client's one after another
    (request i of a client: ``send(session, i)``); (latency, throughput and errors; the figures of the OK answers).
    """

    def client(n: int, offset: int) -> list[tuple[float, int, str, float]]:
        out = []
        with requests.Session() as session:
            for i in range(n):
                t0 = time.perf_counter()
                try:
                    status, error, figure = send(session, offset + i)
                except requests.RequestException as exc:
                    status, error, figure = 0, str(exc)[:200], float("nan")
                out.append((time.perf_counter() - t0, status, error, figure))
        return out

    client(warmup, 0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda c: client(per_client, c * 7), range(clients)))
    wall = time.perf_counter() - t0
    flat = [r for rs in results for r in rs]
    ok = [r for r in flat if r[1] == 200]
    errors = [(status, err) for _, status, err, _ in flat if status != 200]
    summary = {
        "requests": len(flat),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(ok) / wall, 2),
        "latency_ms": latency_stats([1000 * r[0] for r in ok]),
    }
    return summary, [r[3] for r in ok]


def bad_requests(url: str, good: str) -> list[dict[str, Any]]:
    """Each malformed request's status and reason, and whether a good request still succeeds after it."""
    huge = _png_b64(Image.new("1", (10_000, 10_000)))  # small as a PNG, 300 MB as decoded RGB
    cases = {
        "corrupt base64": {"dataframe_records": [{"image": good}, {"image": "@@ not base64 @@"}]},
        "non-image bytes": {"dataframe_records": [{"image": base64.b64encode(b"a text file").decode()}]},
        "10,000 x 10,000 image": {"dataframe_records": [{"image": huge}]},
        "missing 'image' column": {"dataframe_records": [{"picture": good}]},
    }
    out = []
    for name, payload in cases.items():
        t0 = time.perf_counter()
        resp = requests.post(url, json=payload, timeout=120)
        ms = 1000 * (time.perf_counter() - t0)
        try:
            reason = json.loads(resp.text).get("message", resp.text)
        except ValueError:
            reason = resp.text
        after = requests.post(url, json={"dataframe_records": [{"image": good}]}, timeout=120).status_code
        out.append({"request": name, "status": resp.status_code, "ms": round(ms, 1), "reason": reason[:2000],
                    "next_good_request": after})  # fmt: skip
    return out


def markdown(result: dict[str, Any]) -> str:
    meta, load = result["meta"], result["load"]
    lat = load["latency_ms"]
    lines = [
        f"`{meta['command']}`",
        "",
        f"Model {meta['model_uri']}, {meta['image_size']} px PNG images, {meta['workers']} server worker(s), "
        f"{meta['clients']} clients x {meta['per_client']} requests, one image per request, "
        f"anomaly map {'returned' if meta['maps'] else 'not returned'}; {meta['machine']}, "
        f"load average {meta['loadavg']} at start.",
        "",
        "| requests | errors | p50 ms | p90 ms | p99 ms | max ms | requests/s | wall s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {load['requests']} | {load['errors']} | {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['max']} "
        f"| {load['throughput_rps']} | {load['wall_s']} |",
        "",
        "| bad request | status | reason | next good request |",
        "|---|---|---|---|",
    ]
    for case in result["bad_requests"]:
        # MLflow's own schema errors put the reason after dumps of the request: show that last part.
        reason = case["reason"].rsplit("Error: ", 1)[-1].replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {case['request']} | {case['status']} | {reason} | {case['next_good_request']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="Requests per client.")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="mlflow models serve -w.")
    parser.add_argument("--model-uri", default=None, help="Default: train a tiny model in a temporary store.")
    parser.add_argument("--tracking-uri", default=None, help="Store of --model-uri (default MLFLOW_TRACKING_URI).")
    parser.add_argument("--images", type=Path, default=None, help="Folder of PNG/JPEG images to send.")
    parser.add_argument("--no-maps", action="store_true", help="Ask for scores only (params.return_maps=false).")
    parser.add_argument("--tag", default=None, help="Names the results file and RESULTS.md section.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Folder of the JSON results.")
    parser.add_argument("--write-results", action="store_true", help="Update benchmarks/RESULTS.md.")
    parser.add_argument("--keep-work", action="store_true", help="Keep the temporary store and server log.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adkd-serve-load-"))
    env = dict(os.environ, ADKD_RUNS_DIR=str(work / "runs"), ADKD_CACHE_DIR=str(work / "cache"), COLUMNS="200")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the scoring server execs `uvicorn` from PATH
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if args.model_uri:
        if args.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
        model_uri, images = args.model_uri, args.images
        if images is None:
            raise SystemExit("--model-uri needs --images FOLDER (images to send)")
    else:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        print(f"training a tiny model in {work} ...", flush=True)
        model_uri, images = train_tiny_model(work, env)
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:32]
    if not files:
        raise SystemExit(f"no PNG/JPEG images under {images}")
    encoded = [_png_b64(Image.open(p).convert("RGB")) for p in files]
    params = {"params": {"return_maps": False}} if args.no_maps else {}
    payloads = [json.dumps({"dataframe_records": [{"image": e}], **params}).encode() for e in encoded]

    port = free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)]  # fmt: skip
    server = start_and_wait(cmd, f"http://127.0.0.1:{port}/ping", env, work / "serve.log")
    url = f"http://127.0.0.1:{port}/invocations"

    def send(session: requests.Session, i: int) -> tuple[int, str, float]:
        headers = {"Content-Type": "application/json"}
        resp = session.post(url, data=payloads[i % len(payloads)], headers=headers, timeout=120)
        return resp.status_code, "" if resp.status_code == 200 else resp.text[:200], float("nan")

    try:
        size = "x".join(str(v) for v in Image.open(files[0]).size)
        load, _ = run_load(send, args.clients, args.requests, args.warmup)
        bad = bad_requests(url, encoded[0])
    finally:
        stop_tree(server.pid, reap=server)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    command = f"benchmarks/serve_load.py --clients {args.clients} --requests {args.requests} --workers {args.workers}"
    command += " --no-maps" if args.no_maps else ""
    meta = {
        "command": command,
        "model_uri": model_uri,
        "image_size": size,
        "workers": args.workers,
        "clients": args.clients,
        "per_client": args.requests,
        "maps": not args.no_maps,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "loadavg": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    result = {"meta": meta, "load": load, "bad_requests": bad}
    tag = args.tag or f"c{args.clients}x{args.requests}-w{args.workers}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"serve_load-{tag}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).parent))
        from results_md import write_section  # the sibling script

        write_section(f"serve_load-{tag}", "## Serving under load (issue 16)\n\n" + text)
    print(text)
    failed = load["errors"] or any(c["status"] != 400 or c["next_good_request"] != 200 for c in bad)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
