#!/usr/bin/env bash
# Pack what a bare GPU image (Python 3.12 with torch, onnxruntime, pytest, numpy/pandas/pyarrow) lacks for
# benchmarks/gpu_check.sh: ray (without Java, RLlib, Serve, dashboard UI), pydantic and Ray's schema libraries,
# unpacked into one tar.xz (about 31 MB) at the versions installed in .venv.
#
#   benchmarks/gpu_bundle.sh [--data] [OUT.tar.xz]          (default carry/site.tar.xz)
# --data also copies the real MVTec bottle (../shared/data/mvtec_ad_256, 22 MB) into carry/gpu-data/mvtec_ad_256,
# for the moonshot's end-to-end and multi-category runs. carry/ is git-ignored: name it in the device call's carry.
# On the GPU machine:
#   mkdir -p /tmp/site && tar -xJf carry/site.tar.xz -C /tmp/site
#   PYTHONPATH=/tmp/site:$PWD PYTHON=python3 bash benchmarks/gpu_check.sh --out DIR --parts table,moonshot \
#     --data carry/gpu-data/mvtec_ad_256
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--data" ]]; then
  shift
  mkdir -p carry/gpu-data/mvtec_ad_256
  rm -rf carry/gpu-data/mvtec_ad_256/bottle
  cp -r ../shared/data/mvtec_ad_256/bottle carry/gpu-data/mvtec_ad_256/
  echo "gpu_bundle.sh: copied the bottle into carry/gpu-data/mvtec_ad_256 ($(du -sh carry/gpu-data | cut -f1))"
fi
OUT_TAR=$(realpath -m "${1:-carry/site.tar.xz}")
PY=${PYTHON:-.venv/bin/python}
NAMES=(ray pydantic pydantic_core annotated_types typing_inspection colorful jsonschema jsonschema_specifications
       referencing rpds_py)
SPECS=()
for n in "${NAMES[@]}"; do
  SPECS+=("$n==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$n")")
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WORK/wheels" "${SPECS[@]}"
mkdir "$WORK/site"
for w in "$WORK"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$WORK/site"; done
cd "$WORK/site"
rm -rf ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build ray/tests
find ray -name tests -type d -prune -exec rm -rf {} +
chmod +x ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet
mkdir -p "$(dirname "$OUT_TAR")"
tar -cJf "$OUT_TAR" .
echo "gpu_bundle.sh: wrote $OUT_TAR ($(du -h "$OUT_TAR" | cut -f1))"
