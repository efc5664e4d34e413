#!/usr/bin/env bash
# Writes the registered pyfunc model in model/ with an older adkd release (see README.md), without its ONNX file.
# Usage: generate.sh RELEASE_TREE [PYTHON]   e.g. generate.sh /tmp/rel-46866c5 /work/main/.venv/bin/python
set -euo pipefail
release=$(cd "$1" && pwd)
python=${2:-python}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# That release's export of a small untrained model, logged as that release's registered pyfunc into a
# throwaway store; the model folder MLflow wrote is kept, less the ONNX file (the test exports its own).
(cd "$work" && PYTHONPATH="$release" "$python" - <<'EOF'
from pathlib import Path
import mlflow, torch
from mlflow import MlflowClient
from adkd.models.zoo import build_model
from adkd.pipelines.export import export_onnx
from adkd.platform.model_logging import log_pyfunc_model

torch.manual_seed(0)
model = build_model("stfpm", backbone="mobilenet_v2", weights="none").eval()
onnx = export_onnx(model, Path("model.onnx"), 32, {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6},
                   {"model": "stfpm", "category": "disc", "backbone": "mobilenet_v2"})
uri = f"sqlite:///{Path('mlflow.db').resolve()}"
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = client.create_experiment("old", artifact_location=Path("artifacts").resolve().as_uri())
run = client.create_run(experiment)
log_pyfunc_model(onnx, run.info.run_id, experiment)
EOF
)
folder=$(dirname "$(find "$work/artifacts" -name python_model.pkl)")
mkdir -p "$here/model"
for f in MLmodel python_model.pkl conda.yaml python_env.yaml requirements.txt; do cp "$folder/$f" "$here/model/$f"; done
