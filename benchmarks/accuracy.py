"""Per-category accuracy over a data root, next to the papers' numbers for the same categories.

    .venv/bin/python benchmarks/accuracy.py --data ROOT --model rd [--preset paper]
        [--categories bottle,cable] [--set key=value ...] [--tag NAME] [--out-dir DIR]

Trains (engine, in this process) one model per category, then writes
benchmarks/results/accuracy-<tag>.json and a markdown table into benchmarks/RESULTS.md with
image AUROC, pixel AUROC and AUPRO (FPR ≤ 0.3, MVTec definition) in percent.
Paper columns: RD4AD (CVPR 2022, Tables 1-2) for rd and mrkd, the official STFPM code's README
for stfpm and stfpm-ae (REFERENCE.md §1, §2.3). Their PRO columns use each paper's own PRO code,
which is not the MVTec AUPRO (REFERENCE.md §3.4): compare with care.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

from adkd.pipelines.data.mvtec import discover_categories
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"

_CATS = [
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
]
# (image AUROC, pixel AUROC, PRO) in percent, per MVTec category.
_RD4AD = dict(
    zip(
        _CATS,
        zip(
            [98.9, 100, 100, 99.3, 99.2, 100, 95.0, 96.3, 99.9, 100, 96.6, 97.0, 99.5, 96.7, 98.5],
            [98.9, 99.3, 99.4, 95.6, 95.3, 98.7, 97.4, 98.7, 98.9, 97.3, 98.2, 99.6, 99.1, 92.5, 98.2],
            [97.0, 97.6, 99.1, 90.6, 90.9, 96.6, 91.0, 95.8, 95.5, 92.3, 96.4, 98.2, 94.5, 78.0, 95.4],
        ),
    )
)
_STFPM = dict(
    zip(
        _CATS,
        zip(
            [96.4, 98.2, 95.1, 98.2, 99.6, 100, 93.6, 89.3, 100, 98.3, 95.1, 89.5, 89.7, 93.9, 96.1],
            [99.0, 99.0, 99.1, 96.9, 96.5, 98.8, 95.8, 98.6, 98.5, 97.2, 97.6, 98.8, 99.0, 81.9, 98.8],
            [96.6, 96.4, 95.7, 89.7, 90.1, 95.9, 89.5, 89.6, 95.2, 94.8, 96.6, 94.9, 92.7, 88.1, 86.9],
        ),
    )
)
PAPER = {
    "rd": ("RD4AD paper", _RD4AD),
    "mrkd": ("RD4AD paper (masked-RD paper: mean 99.1 / 98.5 / 95.9 only)", _RD4AD),
    "stfpm": ("official STFPM", _STFPM),
    "stfpm-ae": ("official STFPM", _STFPM),
}


def write_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def table(rows: list[dict], model: str) -> str:
    source, numbers = PAPER.get(model, ("-", {}))
    out = [
        "| category | image AUROC | pixel AUROC | AUPRO | minutes | paper image | paper pixel | paper PRO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = numbers.get(r["category"], (None, None, None))
        cells = [
            r["category"],
            _pct(r.get("test/image_auroc")),
            _pct(r.get("test/pixel_auroc")),
            _pct(r.get("test/aupro")),
            f"{r['minutes']:.1f}",
            *("-" if p is None else f"{p:.1f}" for p in paper),
        ]
        out.append("| " + " | ".join(cells) + " |")
    done = [r for r in rows if r.get("test/image_auroc") is not None]
    if len(done) > 1:
        mean = {k: sum(r[k] for r in done) / len(done) for k in ("test/image_auroc", "test/pixel_auroc", "test/aupro")}
        out.append(
            f"| **mean** | {_pct(mean['test/image_auroc'])} | {_pct(mean['test/pixel_auroc'])} | "
            f"{_pct(mean['test/aupro'])} | | | | |"
        )
    return f"Paper columns: {source}.\n\n" + "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="rd")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--categories", default=None, help="Comma-separated; default: every category in --data.")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, repeatable.")
    ap.add_argument("--tag", default=None, help="Result name; default <model>-<preset>.")
    ap.add_argument("--out-dir", default="adkd-runs/bench-accuracy")
    args = ap.parse_args()
    categories = args.categories.split(",") if args.categories else discover_categories(args.data)
    tag = args.tag or f"{args.model}-{args.preset}"
    rows = []
    for category in categories:
        overrides = [f"out_dir={args.out_dir}/{tag}", *args.overrides]
        config = resolve_config(args.model, args.preset, category, args.data, overrides)
        started = time.perf_counter()
        result = train_category(config)
        row = {
            "category": category,
            "status": result.status,
            "error": result.error,
            "minutes": (time.perf_counter() - started) / 60,
            "epochs_run": result.epochs_run,
            **{k: v for k, v in result.metrics.items() if k.startswith(("test/", "train/", "time/"))},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"accuracy-{tag}.json"
    first = resolve_config(args.model, args.preset, categories[0], args.data, args.overrides)
    payload = {"benchmark": "accuracy", "tag": tag, "config": first.model_dump(mode="json"), "rows": rows}
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    settings = ", ".join(args.overrides) or "none"
    body = (
        f"### Accuracy: {args.model}, preset {args.preset} ({tag})\n\n"
        f"Data {args.data}; overrides: {settings}; backbone {first.backbone}, {first.image_size} px, "
        f"{first.epochs} epochs.\n\n" + table(rows, args.model)
    )
    write_section(f"accuracy-{tag}", body)
    print(f"wrote {out} and {RESULTS_MD}")


if __name__ == "__main__":
    main()
