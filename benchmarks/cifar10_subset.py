"""Build a one-class CIFAR-10 root from the shared subset through `adkd data download cifar10`.

    .venv/bin/python benchmarks/cifar10_subset.py ROOT [--classes automobile,ship]

Packs ../shared/data/cifar10_subset/cifar10_subset.npz (300 train and 100 test images per class, real
CIFAR pixels) into an archive in the official ``cifar-10-python.tar.gz`` format, serves it on 127.0.0.1
for the length of the command, and runs ``adkd data download cifar10 ROOT --url-base ... --md5 ...``
against it (the official archive is not reachable offline). Then train the protocol with, e.g.:

    adkd train --all-categories --data ROOT --model mrkd --preset cpu-smoke \\
        --set weights=../shared/weights/mobilenet_v2_imagenet_features.pth --set epochs=10 --set val_fraction=0.1

whose results table ends with the mean image AUROC and the paper's 90.9 (masked RD, Table 2).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from adkd.pipelines.data.cifar10 import ARCHIVE, write_official_archive

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO / ".." / "shared" / "data" / "cifar10_subset" / "cifar10_subset.npz"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--classes", default=None, help="Comma-separated classes (default: all ten).")
    parser.add_argument("--subset", type=Path, default=SUBSET)
    args = parser.parse_args()
    z = np.load(args.subset)
    with tempfile.TemporaryDirectory(prefix="adkd-cifar-www-") as www:
        archive = write_official_archive(
            Path(www) / ARCHIVE, (z["train_images"], z["train_labels"], z["test_images"], z["test_labels"])
        )
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=www))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        cmd = [sys.executable, "-m", "adkd.cli.main", "data", "download", "cifar10", str(args.root)]
        cmd += ["--url-base", url, "--md5", md5] + (["--classes", args.classes] if args.classes else [])
        try:
            return subprocess.run(cmd, check=False).returncode
        finally:
            httpd.shutdown()


if __name__ == "__main__":
    sys.exit(main())
