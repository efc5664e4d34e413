"""The masked-RD paper's ablation tables re-run on one category (issue 12), one command per table.

    .venv/bin/python benchmarks/ablation.py --table fmm|attention|levels|rd-vs-mrkd|loss [--rows a,b]
        [--data ../shared/data/mvtec_ad_256] [--category bottle] [--epochs 10] [--image-size 256]
        [--weights ../shared/weights/mobilenet_v2_imagenet_features.pth] [--preset paper] [--set k=v ...]

Tables: ``fmm`` = Table 5 (FMM off/on), ``attention`` = Table 6 (baseline / +SimAM / +SCConv / both),
``levels`` = Table 7 (teacher levels entering the fusion block and the loss), ``rd-vs-mrkd``, and
``loss`` (mrkd's §3.8 paper loss against the two-term reading). Every row trains the engine in this
process on ``--category`` with the MobileNetV2 ImageNet teacher, seed 0, and scores the test split.
Rows that do not improve are reported as they are.

Writes benchmarks/results/ablation-<table>-<tag>.json and a markdown section in benchmarks/RESULTS.md
with image AUROC / pixel AUROC / AUPRO / minutes beside the seed paper's numbers. REFERENCE.md holds only
the seed's MVTec means (FMG+RD, WideResNet50: 99.1 / 98.5 / 95.9) and RD4AD's per-category numbers, not the
seed's per-table ablation rows: the full-model and rd rows carry those, the others "n/a".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import _RD4AD, RESULTS_DIR, RESULTS_MD, _pct, write_section

from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
SEED_MEAN = (99.1, 98.5, 95.9)  # FMG+RD abstract, MVTec mean, WideResNet50 (REFERENCE.md §0)

FULL = {"use_fmm": True, "use_simam": True, "use_scconv": True, "levels": [1, 2, 3]}
# table -> [(row name, model, model_options)]
TABLES: dict[str, list[tuple[str, str, dict]]] = {
    "fmm": [
        ("FMM off", "mrkd", {**FULL, "use_fmm": False}),
        ("FMM on", "mrkd", FULL),
    ],
    "attention": [
        ("baseline", "mrkd", {**FULL, "use_simam": False, "use_scconv": False}),
        ("+SimAM", "mrkd", {**FULL, "use_simam": True, "use_scconv": False}),
        ("+SCConv", "mrkd", {**FULL, "use_simam": False, "use_scconv": True}),
        ("+SimAM +SCConv", "mrkd", FULL),
    ],
    "levels": [
        ("levels 1", "mrkd", {**FULL, "levels": [1]}),
        ("levels 2", "mrkd", {**FULL, "levels": [2]}),
        ("levels 3", "mrkd", {**FULL, "levels": [3]}),
        ("levels 1+2", "mrkd", {**FULL, "levels": [1, 2]}),
        ("levels 1+3", "mrkd", {**FULL, "levels": [1, 3]}),
        ("levels 2+3", "mrkd", {**FULL, "levels": [2, 3]}),
        ("levels 1+2+3", "mrkd", FULL),
    ],
    "rd-vs-mrkd": [
        ("rd", "rd", {}),
        ("mrkd", "mrkd", FULL),
    ],
    "loss": [
        ("paper loss (§3.8)", "mrkd", {**FULL, "loss": "paper"}),
        ("two-term, alpha 1", "mrkd", {**FULL, "loss": "two_term", "alpha": 1.0}),
    ],
}
TITLES = {
    "fmm": "Table 5: feature mask generation",
    "attention": "Table 6: SCSAtt parts",
    "levels": "Table 7: teacher levels in the fusion block and the loss",
    "rd-vs-mrkd": "rd against mrkd",
    "loss": "mrkd loss: §3.8 against the two-term reading",
}


def seed_numbers(name: str, model: str, category: str) -> str:
    """The published numbers that belong beside a row, as a short cell."""
    if model == "rd":
        rd = _RD4AD.get(category)
        return f"RD4AD {category}: {rd[0]:.1f} / {rd[1]:.1f} / {rd[2]:.1f}" if rd else "n/a"
    is_full = name in ("FMM on", "+SimAM +SCConv", "levels 1+2+3", "mrkd", "paper loss (§3.8)")
    image, pixel, pro = SEED_MEAN
    return f"seed mean: {image:.1f} / {pixel:.1f} / {pro:.1f}" if is_full else "n/a"


def markdown(table: str, rows: list[dict], command: str, settings: str) -> str:
    out = [
        f"### Ablation, {TITLES[table]} ({rows[0]['category'] if rows else '-'})",
        "",
        f"Command: `{command}`  ",
        f"Settings: {settings}. Seed column: image / pixel / PRO, see the note in benchmarks/ablation.py.",
        "",
        "| row | image AUROC | pixel AUROC | AUPRO | minutes | seed paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["row"],
            _pct(r.get("test/image_auroc")),
            _pct(r.get("test/pixel_auroc")),
            _pct(r.get("test/aupro")),
            f"{r['minutes']:.1f}",
            r["seed"],
        ]
        if r["status"] != "FINISHED":
            cells[1] = f"{r['status']}: {r.get('error')}"
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, choices=sorted(TABLES))
    ap.add_argument("--rows", default=None, help="Comma-separated row numbers (1-based) to run; default all.")
    ap.add_argument("--data", default=str(SHARED / "data" / "mvtec_ad_256"))
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"))
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, repeatable.")
    ap.add_argument("--tag", default=None, help="Result name; default <backbone>-<size>px-<epochs>ep.")
    ap.add_argument("--out-dir", default="adkd-runs/bench-ablation")
    args = ap.parse_args()
    chosen = TABLES[args.table]
    if args.rows:
        chosen = [chosen[int(i) - 1] for i in args.rows.split(",")]
    tag = args.tag or f"{args.backbone}-{args.image_size}px-{args.epochs}ep"
    common = [
        f"backbone={args.backbone}",
        f"weights={args.weights}",
        f"image_size={args.image_size}",
        f"epochs={args.epochs}",
        f"seed={args.seed}",
    ]
    rows = []
    for i, (name, model, options) in enumerate(chosen):
        run_dir = f"{args.out_dir}/{args.table}-{tag}/{i}"
        overrides = [*common, f"out_dir={run_dir}", *(f"model_options.{k}={json.dumps(v)}" for k, v in options.items())]
        config = resolve_config(model, args.preset, args.category, args.data, [*overrides, *args.overrides])
        started = time.perf_counter()
        result = train_category(config)
        row = {
            "row": name,
            "model": model,
            "category": args.category,
            "model_options": config.model_options,
            "status": result.status,
            "error": result.error,
            "minutes": (time.perf_counter() - started) / 60,
            "seed": seed_numbers(name, model, args.category),
            **{k: v for k, v in result.metrics.items() if k.startswith(("test/", "train/", "time/"))},
        }
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ablation-{args.table}-{tag}.json"
    out.write_text(
        json.dumps({"benchmark": "ablation", "table": args.table, "tag": tag, "rows": rows}, indent=2) + "\n"
    )
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    settings = (
        f"{args.category}, {args.backbone} teacher ({args.weights}), {args.image_size} px, {args.epochs} epochs, "
        f"seed {args.seed}, preset {args.preset}" + (f", {', '.join(args.overrides)}" if args.overrides else "")
    )
    write_section(f"ablation-{args.table}-{tag}", markdown(args.table, rows, command, settings))
    print(f"wrote {out} and {RESULTS_MD}")


if __name__ == "__main__":
    main()
