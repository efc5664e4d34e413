"""`adkd data download cifar10` against an archive in the official format served on 127.0.0.1.

The archive is built here from real CIFAR pixels (../shared/data/cifar10_subset, 300 train and 100
test images per class), pickled the way the official ``cifar-10-python.tar.gz`` is.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import DataError, ServiceError
from adkd.pipelines.data.cifar10 import CIFAR10_MD5, CIFAR10_URL, CLASSES, download_cifar10
from adkd.pipelines.data.protocol import read_reference
from tests.cli_process import run_adkd
from tests.integration.conftest import FileServer, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SUBSET = REPO / ".." / "shared" / "data" / "cifar10_subset" / "cifar10_subset.npz"
needs_subset = pytest.mark.skipif(not SUBSET.is_file(), reason="shared CIFAR-10 subset (../shared/data) not present")
ARCHIVE = "cifar-10-python.tar.gz"


def _batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    # The official layout: data uint8 [N, 3072], channel-major (1024 red, 1024 green, 1024 blue) rows.
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps({b"batch_label": b"x", b"labels": labels.tolist(), b"data": data}, protocol=2)


def _first_per_class(images: np.ndarray, labels: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return images, labels
    keep = np.sort(np.concatenate([np.flatnonzero(labels == k)[:n] for k in range(len(CLASSES))]))
    return images[keep], labels[keep]


def official_archive(path: Path, members: dict[str, bytes] | None = None, per_class: int | None = None) -> str:
    """Write the subset (``per_class``: only the first train and test images of each class) as
    ``cifar-10-python.tar.gz``; returns its md5."""
    if members is None:
        z = np.load(SUBSET)
        tx, ty = _first_per_class(z["train_images"], z["train_labels"], per_class)
        order = np.random.default_rng(0).permutation(len(ty))  # batches mix classes, as CIFAR's do
        tx, ty = tx[order], ty[order]
        members = {
            f"cifar-10-batches-py/data_batch_{i + 1}": _batch(x, y)
            for i, (x, y) in enumerate(zip(np.array_split(tx, 5), np.array_split(ty, 5)))
        }
        members["cifar-10-batches-py/test_batch"] = _batch(
            *_first_per_class(z["test_images"], z["test_labels"], per_class)
        )
        members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, 2)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_official_source_and_checksum() -> None:
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


@needs_subset
def test_download_builds_one_class_categories_and_skips_the_second_time(
    file_server: FileServer, tmp_path: Path
) -> None:
    md5 = official_archive(file_server.root / ARCHIVE)
    root = tmp_path / "cifar"
    report = download_cifar10(root, ["automobile", "8"], url_base=file_server.url, md5=md5)
    assert report.categories == {"automobile": "downloaded", "ship": "downloaded"}
    assert report.counts == {"automobile": (300, 100, 900), "ship": (300, 100, 900)}
    z = np.load(SUBSET)
    for name in ("automobile", "ship"):
        k = CLASSES.index(name)
        train = sorted((root / name / "train" / "good").iterdir())
        expected = z["train_images"][z["train_labels"] == k]
        got = np.stack([np.asarray(Image.open(p)) for p in train])
        assert sorted(map(bytes, got.reshape(len(got), -1))) == sorted(map(bytes, expected.reshape(len(got), -1)))
        anomalies = sorted((root / name / "test" / "anomaly").iterdir())
        assert {p.name.split("_")[0] for p in anomalies} == set(CLASSES) - {name}  # the other nine classes
        assert not (root / name / "ground_truth").exists()  # image-level
    first = sorted((root / "ship" / "test" / "good").iterdir())[0]
    index = int(first.stem)
    assert np.array_equal(np.asarray(Image.open(first)), z["test_images"][index])
    assert first.stat().st_nlink >= 2  # test images are stored once and linked
    assert read_reference(root) == {"label": "paper (masked RD, Table 2)", "test/image_auroc": 0.909}
    assert sorted(p.name for p in root.iterdir()) == [".cifar10-test", "adkd_protocol.json", "automobile", "ship"]
    again = download_cifar10(root, ["automobile", "ship"], url_base=file_server.url, md5=md5)
    assert again.categories == {"automobile": "skipped", "ship": "skipped"} and len(file_server.log) == 1


@needs_subset
def test_interrupted_download_resumes(file_server: FileServer, tmp_path: Path) -> None:
    md5 = official_archive(file_server.root / ARCHIVE)
    size = (file_server.root / ARCHIVE).stat().st_size
    file_server.cut_after[ARCHIVE] = size // 2
    root = tmp_path / "cifar"
    with pytest.raises(ServiceError, match=r"interrupted .* run the same command again to resume"):
        download_cifar10(root, ["cat"], url_base=file_server.url, md5=md5, retries=0)
    assert (root / ".downloads" / f"{ARCHIVE}.part").stat().st_size == size // 2 and not (root / "cat").exists()
    report = download_cifar10(root, ["cat"], url_base=file_server.url, md5=md5)
    assert report.counts == {"cat": (300, 100, 900)}
    assert [(e["range"], e["status"]) for e in file_server.log] == [(None, 200), (f"bytes={size // 2}-", 206)]
    assert not (root / ".downloads").exists()


@needs_subset
def test_corrupted_archive_is_refused_and_writes_nothing(file_server: FileServer, tmp_path: Path) -> None:
    path = file_server.root / ARCHIVE
    official_archive(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # damaged in transit or on the mirror
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"checksum mismatch for {ARCHIVE} .* expected md5 {CIFAR10_MD5}"):
        download_cifar10(tmp_path / "a", ["cat"], url_base=file_server.url)  # the official md5 guards it
    assert not (tmp_path / "a").exists()
    md5 = hashlib.md5(bytes(data)).hexdigest()  # a mirror that published the md5 of its broken file
    with pytest.raises(DataError, match=f"archive .*{ARCHIVE}.* corrupt"):
        download_cifar10(tmp_path / "b", ["cat"], url_base=file_server.url, md5=md5)
    assert not (tmp_path / "b").exists()


def test_a_pickle_that_runs_code_is_refused(file_server: FileServer, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    members = {
        "cifar-10-batches-py/data_batch_1": pickle.dumps({b"data": Evil(), b"labels": [0]}, 2),
        "cifar-10-batches-py/test_batch": pickle.dumps({b"data": Evil(), b"labels": [0]}, 2),
    }
    md5 = official_archive(file_server.root / ARCHIVE, members)
    with pytest.raises(DataError, match=r"unexpected object .*system in a CIFAR-10 batch"):
        download_cifar10(tmp_path / "c", ["cat"], url_base=file_server.url, md5=md5)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "c").exists()


def test_cli_offline_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_adkd(["data", "download", "cifar10", str(tmp_path / "c"), "--url-base", url], cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot download") and "ADKD_CIFAR10_URL" in lines[0]
    assert not (tmp_path / "c").exists()
