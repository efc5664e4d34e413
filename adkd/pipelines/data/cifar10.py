"""One-class CIFAR-10 (the masked-RD paper's Table 2): the official archive as one category per class.

Category ``<class>``: train/good = the class's training images, test/good = its test images,
test/anomaly = the other classes' test images, no masks (image-level). Each test image is written
once under ``ROOT/.cifar10-test`` and hard-linked into the categories (copied where links fail).
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.pipelines.data.download import DOWNLOADS_DIR_NAME, ProgressFn, download_file, safe_extract
from adkd.pipelines.data.images import decode_workers
from adkd.pipelines.data.protocol import write_protocol

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published beside the archive on the CIFAR page
ARCHIVE = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
URL_ENV_VAR = "ADKD_CIFAR10_URL"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ANOMALY = "anomaly"
TEST_STORE = ".cifar10-test"
PAPER_MEAN_IMAGE_AUROC = 0.909  # masked RD, Table 2: mean image AUROC over the ten one-class runs

# What the official batches may contain: dicts, lists, bytes and numpy arrays. Anything else in a
# pickle (e.g. os.system) is refused instead of executed.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles (protocol 2) store an array's raw bytes
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


@dataclass
class Cifar10Report:
    root: Path
    categories: dict[str, str] = field(default_factory=dict)  # class -> downloaded | skipped
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # class -> train, test good, anomaly


def resolve_classes(classes: Iterable[str] | None) -> list[str]:
    """Class names (or indices 0-9) -> names in CIFAR order; all ten when None."""
    if not classes:
        return list(CLASSES)
    out = []
    for c in classes:
        name = CLASSES[int(c)] if c.isdigit() and int(c) < len(CLASSES) else c
        if name not in CLASSES:
            raise ConfigError(f"unknown CIFAR-10 class {c!r} in --classes; choose from {', '.join(CLASSES)} (or 0-9)")
        out.append(name)
    return sorted(set(out), key=CLASSES.index)


def _get(batch: dict, key: str) -> object:
    return batch[key.encode()] if key.encode() in batch else batch[key]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 32, 32, 3], labels int64 [N]) from one official pickled batch."""
    try:
        with path.open("rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
        data = np.asarray(_get(batch, "data"), dtype=np.uint8)
        labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"CIFAR-10 batch {path.name} cannot be read ({exc}); delete the download and retry") from None
    bad_labels = labels.min(initial=0) < 0 or labels.max(initial=0) >= len(CLASSES)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data) or bad_labels:
        raise DataError(
            f"CIFAR-10 batch {path.name} has data {data.shape} and {len(labels)} labels: not the official format"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_batches(folder: Path, source: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images and labels from an extracted ``cifar-10-batches-py`` folder (from ``source``)."""
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files or not (folder / "test_batch").is_file():
        raise DataError(
            f"{source or folder} lacks {BATCH_DIR}/data_batch_* or test_batch: the archive is corrupt or not the "
            "official CIFAR-10 python archive; download it again (or fix the mirror)"
        )
    parts = [read_batch(p) for p in train_files]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = read_batch(folder / "test_batch")
    return train_x, train_y, test_x, test_y


def _write_pngs(arrays: np.ndarray, paths: list[Path]) -> None:
    def save(i: int) -> None:
        paths[i].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays[i]).save(paths[i], format="PNG")

    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        list(pool.map(save, range(len(paths))))


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dest)


def build_categories(
    root: Path,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    classes: list[str],
    force: bool = False,
    on_class: Callable[[str], None] | None = None,
) -> Cifar10Report:
    """Write one MVTec-layout, image-level category per class in ``classes``."""
    train_x, train_y, test_x, test_y = arrays
    report = Cifar10Report(root)
    todo = [c for c in classes if force or not (root / c).is_dir()]
    report.categories = {c: ("skipped" if c not in todo else "downloaded") for c in classes}
    if not todo:
        return report
    store = root / TEST_STORE
    test_paths = [store / f"{i:05d}.png" for i in range(len(test_x))]
    missing = [i for i, p in enumerate(test_paths) if not p.is_file()]
    _write_pngs(test_x[missing], [test_paths[i] for i in missing])
    for name in todo:
        k = CLASSES.index(name)
        staging = Path(tempfile.mkdtemp(prefix=f".adkd-{name}-", dir=root))
        try:
            train_idx = np.flatnonzero(train_y == k)
            _write_pngs(train_x[train_idx], [staging / "train" / "good" / f"{i:05d}.png" for i in train_idx])
            good, bad = 0, 0
            for i, label in enumerate(test_y):
                if label == k:
                    _link(test_paths[i], staging / "test" / "good" / f"{i:05d}.png")
                    good += 1
                else:
                    _link(test_paths[i], staging / "test" / ANOMALY / f"{CLASSES[label]}_{i:05d}.png")
                    bad += 1
            if not len(train_idx) or not good or not bad:
                raise DataError(
                    f"CIFAR-10 class {name}: {len(train_idx)} train, {good} test and {bad} other test images; "
                    "the archive is incomplete"
                )
            if (root / name).exists():
                shutil.rmtree(root / name)
            staging.replace(root / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report.counts[name] = (len(train_idx), good, bad)
        if on_class:
            on_class(name)
    return report


def download_cifar10(
    root: str | Path,
    classes: Iterable[str] | None = None,
    *,
    url_base: str | None = None,
    md5: str | None = None,
    keep_archive: bool = False,
    force: bool = False,
    retries: int = 3,
    progress: ProgressFn | None = None,
) -> Cifar10Report:
    """Fetch (checksummed, resumable) and extract the official archive; build the one-class categories."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"download target {root} is a file; pass a folder as ROOT")
    names = resolve_classes(classes)
    if all((root / c).is_dir() for c in names) and not force:
        return Cifar10Report(root, dict.fromkeys(names, "skipped"))
    url = f"{url_base.rstrip('/')}/{ARCHIVE}" if url_base else CIFAR10_URL
    downloads = root / DOWNLOADS_DIR_NAME
    archive = downloads / ARCHIVE
    created_root = not root.exists()
    try:
        download_file(
            url, archive, (md5 or CIFAR10_MD5).lower(), retries=retries, progress=progress, algorithm="md5",
            url_hint=f"--url-base / {URL_ENV_VAR}",
        )  # fmt: skip
        extract_dir = Path(tempfile.mkdtemp(prefix=".adkd-extract-", dir=downloads))
        try:
            try:
                safe_extract(archive, extract_dir, required=BATCH_DIR)
                arrays = read_batches(extract_dir / BATCH_DIR, f"archive {archive}")
            except DataError:
                archive.unlink(missing_ok=True)  # verified bytes but unusable content: never reuse it
                raise
        finally:
            shutil.rmtree(extract_dir, ignore_errors=True)
        report = build_categories(root, arrays, names, force)
        write_protocol(
            root,
            "one-class CIFAR-10",
            {"label": "paper (masked RD, Table 2)", "test/image_auroc": PAPER_MEAN_IMAGE_AUROC},
        )
        if not keep_archive:
            archive.unlink(missing_ok=True)
    finally:
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
        if created_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return report


def write_official_archive(path: Path, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> Path:
    """A ``cifar-10-python.tar.gz`` in the official format (5 train batches, test batch, meta) from arrays.

    For tests and mirrors built from other copies of CIFAR-10 (e.g. the shared subset).
    """
    train_x, train_y, test_x, test_y = arrays

    def batch(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
        data = x.transpose(0, 3, 1, 2).reshape(len(x), -1).astype(np.uint8)
        return pickle.dumps({b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": data}, 2)

    members = {
        f"{BATCH_DIR}/data_batch_{i + 1}": batch(xs, ys, f"training batch {i + 1} of 5")
        for i, (xs, ys) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5)))
    }
    members[f"{BATCH_DIR}/test_batch"] = batch(test_x, test_y, "testing batch 1 of 1")
    members[f"{BATCH_DIR}/batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, 2)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
