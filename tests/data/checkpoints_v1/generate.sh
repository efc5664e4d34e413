#!/usr/bin/env bash
# Writes the format-1 checkpoints in this folder with an older adkd release (see README.md).
# Usage: generate.sh RELEASE_TREE [PYTHON]   e.g. generate.sh /tmp/rel-46866c5 /work/main/.venv/bin/python
set -euo pipefail
release=$(cd "$1" && pwd)
python=${2:-python}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
adkd() { (cd "$work" && PYTHONPATH="$release" "$python" -c \
    'import sys; from adkd.cli.main import run; sys.argv[0] = "adkd"; sys.exit(run())' "$@"); }

# A random MobileNetV2 teacher whose float weights keep 3 mantissa bits: the files compress to about
# a third in git, and the teacher is still a working random network.
PYTHONPATH="$release" "$python" - "$work/teacher.pt" <<'EOF'
import sys, torch, torchvision
torch.manual_seed(0)
state = torchvision.models.mobilenet_v2(weights=None).state_dict()
rounded = {k: (v.view(torch.int32) & -(1 << 20)).view(torch.float32) if v.dtype == torch.float32 else v
           for k, v in state.items()}
torch.save(rounded, sys.argv[1])
EOF

adkd data synth data --categories disc --size 64 --train 8 --test 4 --seed 0
common=(--data data --category disc --preset cpu-smoke --set epochs=1 --set "weights=$work/teacher.pt"
        --no-tracking --out runs)
adkd train --model rd "${common[@]}" --set "model_options.levels=[3]"
adkd train --model mrkd "${common[@]}"
adkd train --model stfpm "${common[@]}"
adkd train --model stfpm-ae "${common[@]}" --set ae_pretrain_epochs=1
for m in rd mrkd stfpm stfpm-ae; do cp "$work/runs/$m/disc/model.pt" "$here/$m.pt"; done

# What that release predicts for a fixed input: input.npy (ImageNet-normalised, [2,3,64,64]) and
# <model>.maps.npy (the eval-mode anomaly maps, [2,1,64,64]; the score is each map's max).
PYTHONPATH="$release" "$python" - "$here" <<'EOF'
import sys
from pathlib import Path
import numpy as np, torch
from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
here = Path(sys.argv[1])
x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
np.save(here / "input.npy", x)
for m in ("rd", "mrkd", "stfpm", "stfpm-ae"):
    model, _, _ = load_model_from_checkpoint(here / f"{m}.pt")
    with torch.no_grad():
        maps, _ = model(torch.from_numpy(x))
    np.save(here / f"{m}.maps.npy", maps.numpy())
EOF
