#!/usr/bin/env bash
# One prepared GPU check: the gpu-marked tests, then the throughput table (JSON + a RESULTS.md section).
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR]      (from the repo root, after `make install`)
#
# Uses the repo's installed package (.venv/bin/python, or $PYTHON). No network, no ../shared: weights=none.
# On a bare GPU image, benchmarks/gpu_bundle.sh packs the missing packages (Ray, pydantic) and says how to use them.
# Budget: about 8 minutes on one GPU (tests <= 5 min, table <= 3 min, each under its own timeout).
# --dry-run: on CPU at tiny sizes (the gpu tests skip, the table runs resnet18 at 64 px), for CI. A dry run never
# writes into benchmarks/results/ (where the real GPU figures live): without --out it writes to a new temporary
# folder (named at the start and the end), and an --out inside benchmarks/results/ is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
done
RESULTS="$(realpath -m benchmarks/results)"
if [[ $DRY == 1 ]]; then
  if [[ -z "$OUT" ]]; then
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/adkd-gpu-check-dry.XXXXXX")"
  fi
  case "$(realpath -m "$OUT")/" in
    "$RESULTS"/*) echo "gpu_check.sh: a dry run does not write into benchmarks/results/ (the GPU figures live there); pass --out with another folder or leave it out" >&2; exit 2 ;;
  esac
  echo "gpu_check.sh: dry run, writing to $OUT"
fi
OUT="${OUT:-benchmarks/results/gpu}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 ADKD_OFFLINE=1 ADKD_TRACKING=off

echo "== environment" | tee "$OUT/gpu_check.log"
"$PYTHON" - <<'PY' 2>&1 | tee -a "$OUT/gpu_check.log"
import torch, adkd
print("adkd", adkd.__file__, "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "gpus", torch.cuda.device_count())
PY

if [[ $DRY == 0 ]]; then
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA GPU visible; use --dry-run")'
fi

echo "== gpu-marked tests" | tee -a "$OUT/gpu_check.log"
set +e
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs --junitxml "$OUT/gpu_tests.xml" \
  2>&1 | tee -a "$OUT/gpu_check.log"
TESTS_RC=${PIPESTATUS[0]}
set -e

echo "== throughput" | tee -a "$OUT/gpu_check.log"
DRY_FLAG=()
[[ $DRY == 1 ]] && DRY_FLAG=(--dry-run)
timeout 180 "$PYTHON" benchmarks/gpu_throughput.py --out "$OUT" "${DRY_FLAG[@]}" 2>&1 | tee -a "$OUT/gpu_check.log"
TABLE_RC=${PIPESTATUS[0]}

"$PYTHON" - "$OUT" "$TESTS_RC" "$TABLE_RC" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, tests_rc, table_rc = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
suite = ET.parse(out / "gpu_tests.xml").getroot()
suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
table = json.loads((out / "gpu_throughput.json").read_text())
# The skips each mode expects: the NCCL test below 2 GPUs, and on the dry run's CPU every test (no CUDA).
# Any other skip (a missing package, a busy Ray) is a gpu path left unchecked, so the check fails.
allowed = ("needs 2 GPUs",) if table["env"]["mode"] == "CUDA" else ("needs 2 GPUs", "needs a CUDA GPU")
skips = {f"{c.get('classname')}::{c.get('name')}": s.get("message", "")
         for c in suite.iter("testcase") for s in c.findall("skipped")}
unexpected = {name: why for name, why in skips.items() if not any(a in why for a in allowed)}
summary = {"tests": counts, "tests_rc": tests_rc, "table_rc": table_rc, "unexpected_skips": unexpected, **table}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
md = (f"### GPU check ({table['env']['mode']}, {table['env']['device_name']})\n\n"
      f"gpu tests: {passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped.\n\n"
      + (out / "gpu_throughput.md").read_text())
(out / "gpu_check.md").write_text(md)
print(md)
if unexpected or counts["tests"] == 0:
    sys.exit(f"gpu_check.sh: {len(unexpected)} gpu test(s) skipped for a reason other than {allowed} "
             f"({counts['tests']} collected): {unexpected}")
if table["env"]["mode"] == "CUDA":
    sys.path.insert(0, "benchmarks")
    from train_speed import write_section
    write_section("gpu_check", md)
PY
if [[ $TESTS_RC != 0 && $TESTS_RC != 5 ]]; then
  echo "gpu_check.sh: gpu tests failed (rc $TESTS_RC); see $OUT/gpu_check.log" >&2
  exit 1
fi
echo "gpu_check.sh: wrote $OUT/gpu_check.json and $OUT/gpu_check.md"
