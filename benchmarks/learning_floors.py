"""Where the learning tests' accuracy floors come from: each learning test's run under several seeds and CPU kernels.

Seeded runs repeat on one machine, not across CPU kernel sets (ATen picks AVX-512, AVX2 or plain kernels at
start-up, and their float sums differ), so a floor is set below the worst value measured here with a margin.

    python benchmarks/learning_floors.py --seeds 0,1,2 --capabilities native,default,avx2 --jobs 2

Writes benchmarks/results/learning_floors.json and prints a markdown table (worst value per metric).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"

# name -> (model, preset, category, data kind, overrides): the learning tests' own configurations.
CASES: dict[str, tuple[str, str, str, str, list[str]]] = {
    "synthetic rd": ("rd", "cpu-smoke", "weave", "synth", []),
    "synthetic mrkd": ("mrkd", "cpu-smoke", "weave", "synth", []),
    "synthetic stfpm": ("stfpm", "cpu-smoke", "weave", "synth", []),
    "synthetic stfpm-ae": ("stfpm-ae", "cpu-smoke", "weave", "synth", []),
    **{
        f"synthetic {m} (ImageNet teacher)": (m, "cpu-smoke", "weave", "synth", [f"weights={WEIGHTS}"])
        for m in ("rd", "mrkd", "stfpm", "stfpm-ae")
    },
    **{
        f"bottle {model} ({epochs})" + suffix: (
            model,
            "bottle-mobilenet",
            "bottle",
            "bottle",
            [*extra, f"weights={WEIGHTS}", *precision],
        )
        for model, epochs, extra in (("rd", "4 epochs", ["epochs=4"]), ("mrkd", "10 epochs", []))
        # The default precision is bf16 where the CPU has it natively and fp32 elsewhere (CI's CPU may lack it):
        # the bottle test's floors must hold under both.
        for suffix, precision in (("", []), (" fp32", ["amp=false"]))
    },
}

_CHILD = """
import json, sys
from adkd.pipelines.train.engine import train_category
from adkd.pipelines.train.presets import resolve_config
model, preset, category, root, out, *overrides = sys.argv[1:]
config = resolve_config(model, preset, category, root, [f"out_dir={out}", "num_threads=1", *overrides])
result = train_category(config)
print("RESULT " + json.dumps({"status": result.status, "metrics": result.metrics, "error": result.error}))
"""


def _one(case: str, seed: int, capability: str, roots: dict[str, str], scratch: Path) -> dict:
    model, preset, category, kind, overrides = CASES[case]
    env = dict(os.environ)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    out = scratch / f"{case.replace(' ', '_')}-{seed}-{capability}"
    args = [model, preset, category, roots[kind], str(out), f"seed={seed}", *overrides]
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"case": case, "seed": seed, "capability": capability, "error": done.stderr[-2000:]}
    return {"case": case, "seed": seed, "capability": capability, **json.loads(line[7:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--capabilities", default="native,default,avx2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "learning_floors.json")
    args = parser.parse_args()
    from adkd.pipelines.data.synthetic_dataset import synthesize

    scratch = Path(tempfile.mkdtemp(prefix="adkd-floors-"))
    synth_root = scratch / "synth"
    synthesize(synth_root, ["weave"], size=64, seed=0)  # the test fixture's data set
    roots = {"synth": str(synth_root), "bottle": str((SHARED / "data" / "mvtec_ad_256").resolve())}
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    jobs = [
        (case, int(seed), cap)
        for case in cases
        for cap in args.capabilities.split(",")
        for seed in args.seeds.split(",")
        if cap == "native" or seed == args.seeds.split(",")[0]  # other kernels: the first seed only
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda j: _one(*j, roots, scratch), jobs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=1))
    keys = ("test/image_auroc", "test/pixel_auroc", "test/aupro")
    print("| case | runs | " + " | ".join(f"worst {k[5:]}" for k in keys) + " | values (image AUROC) |")
    print("|---|---|" + "---|" * (len(keys) + 1))
    for case in cases:
        rows = [r for r in runs if r["case"] == case and r.get("status") == "FINISHED"]
        failed = [r for r in runs if r["case"] == case and r.get("status") != "FINISHED"]
        worst = [min((r["metrics"][k] for r in rows), default=float("nan")) for k in keys]
        values = ", ".join(f"s{r['seed']}/{r['capability']}={r['metrics'][keys[0]]:.4f}" for r in rows)
        cells = " | ".join(f"{100 * w:.2f}" for w in worst)
        print(f"| {case} | {len(rows)} (+{len(failed)} failed) | {cells} | {values} |")


if __name__ == "__main__":
    main()
