"""Accuracy beside the papers' numbers: run an `adkd benchmark` grid and put its report into RESULTS.md.

    .venv/bin/python benchmarks/accuracy.py --tag NAME -- GRID [adkd benchmark options ...]

e.g. the masked-RD Table 6 ablation on bottle with the offline MobileNetV2 teacher:

    .venv/bin/python benchmarks/accuracy.py --tag mrkd-table6-bottle -- seed-mrkd-table6 \\
        --data ../shared/data/mvtec_ad_256 --categories bottle --backbone mobilenet_v2 \\
        --weights ../shared/weights/mobilenet_v2_imagenet_features.pth --image-size 256 --epochs 10

Everything after ``--`` goes to ``adkd benchmark`` unchanged (grids: ``adkd benchmark --list``). The
report (benchmark.md / .json / .html) lands in benchmarks/results/<tag>/, and its markdown replaces the
section ``<tag>`` of benchmarks/RESULTS.md (between ``<!-- tag:begin -->`` and ``<!-- tag:end -->``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from results_md import RESULTS_DIR, RESULTS_MD, write_section  # benchmarks/ is on sys.path when run


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: accuracy.py --tag NAME -- GRID [adkd benchmark options]")
    split = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", required=True, help="Section name in RESULTS.md and folder under benchmarks/results.")
    args = ap.parse_args(argv[:split])
    bench = argv[split + 1 :]
    out = RESULTS_DIR / args.tag
    shown = os.path.relpath(out) if out.is_relative_to(Path.cwd()) else str(out)  # as typed in the report
    cmd = [sys.executable, "-m", "adkd.cli.main", "benchmark", *bench, "--out", shown]
    code = subprocess.call(cmd)
    report = out / "benchmark.md"
    if not report.is_file():
        sys.exit(code or 1)
    # The report's own headings sit two levels down inside RESULTS.md.
    body = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", report.read_text(), flags=re.M)
    write_section(args.tag, body)
    print(f"wrote {out} and the section {args.tag} of {RESULTS_MD}")
    sys.exit(code)


if __name__ == "__main__":
    main()
