"""The bad-input corpus: one category per broken case, built from a clean synthetic category."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def write_png_header_bomb(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A tiny PNG whose header claims ``width x height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _truncate(c: Path) -> None:
    p = c / "train/good/000.png"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _rewrite(path: Path, fn: Callable[[np.ndarray], Image.Image]) -> None:
    fn(np.asarray(Image.open(path))).save(path)


def _symlink_loop(c: Path) -> None:
    (c / "train/good/loop.png").symlink_to("loop.png")


def _rgba(c: Path) -> None:
    _rewrite(c / "train/good/003.png", lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 200, np.uint8)])))


def _sixteen_bit(c: Path) -> None:
    _rewrite(c / "train/good/004.png", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257))


def _mask_wrong_size(c: Path) -> None:
    p = c / "ground_truth/hole/000_mask.png"
    Image.open(p).resize((16, 16), Image.Resampling.NEAREST).save(p)


def _mask_nonbinary(c: Path) -> None:
    _rewrite(c / "ground_truth/stain/000_mask.png", lambda a: Image.fromarray((a > 0).astype(np.uint8) * 128))


def _mask_empty(c: Path) -> None:
    _rewrite(c / "ground_truth/stain/000_mask.png", lambda a: Image.fromarray(np.zeros_like(a)))


def _duplicate(c: Path) -> None:
    shutil.copy(c / "train/good/000.png", c / "test/good/005.png")


def _empty_train(c: Path) -> None:
    for p in (c / "train/good").iterdir():
        p.unlink()


def _train_defect(c: Path) -> None:
    (c / "train/bad").mkdir()
    shutil.copy(c / "test/hole/000.png", c / "train/bad/000.png")


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[Path], None]
    rule: str  # the rule id that must fail
    file: str | None  # the file (relative to the category) the failure must name; None: the category
    reason: str = ""  # text that must appear next to the file
    reader_error: str | None = None  # text the reader's DataError must hold; None: the reader converts it


CASES = [
    Case("truncated", _truncate, "decodable", "train/good/000.png", "truncated", "train/good/000.png"),
    Case("zero_byte", lambda c: (c / "test/good/000.png").write_bytes(b""), "decodable", "test/good/000.png",
         "empty file", "test/good/000.png"),
    Case("text_png", lambda c: (c / "train/good/001.png").write_text("not a picture\n"), "decodable",
         "train/good/001.png", "not an image", "train/good/001.png"),
    Case("bomb", lambda c: write_png_header_bomb(c / "train/good/002.png"), "decodable", "train/good/002.png",
         "decompression bomb", "decompression bomb"),
    Case("symlink_loop", _symlink_loop, "decodable", "train/good/loop.png", "symlink loop", "symlink loop"),
    Case("rgba", _rgba, "image-mode", "train/good/003.png", "RGBA"),
    Case("sixteen_bit", _sixteen_bit, "image-mode", "train/good/004.png", "I;16"),
    Case("mask_wrong_size", _mask_wrong_size, "mask-size", "test/hole/000.png", "is 16x16, the image 32x32"),
    Case("mask_nonbinary", _mask_nonbinary, "mask-binary", "test/stain/000.png", "has values 0,128"),
    Case("mask_empty", _mask_empty, "mask-nonempty", "test/stain/000.png", "000_mask.png is all zero"),
    Case("defect_no_mask", lambda c: (c / "ground_truth/scratch/000_mask.png").unlink(), "defect-has-mask",
         "test/scratch/000.png", "missing ", "has no mask"),
    Case("mask_no_image", lambda c: shutil.copy(c / "ground_truth/hole/000_mask.png",
                                                 c / "ground_truth/hole/007_mask.png"),
         "mask-has-image", "ground_truth/hole/007_mask.png"),
    Case("empty_train", _empty_train, "train-min-count", None, "0 images", "holds no images"),
    Case("duplicate", _duplicate, "no-train-test-duplicates", "test/good/005.png"),
    Case("unexpected_file", lambda c: (c / "train/good/notes.txt").write_text("x"), "no-unexpected-files",
         "train/good/notes.txt", "not an image file name"),
    Case("train_defect", _train_defect, "train-only-good", "train/bad/000.png", "bad"),
]  # fmt: skip


def build_corpus(clean_category: Path, root: Path) -> Path:
    """One category per case under ``root``, plus an untouched ``clean`` category."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(clean_category, root / "clean")
    for case in CASES:
        shutil.copytree(clean_category, root / case.name)
        case.mutate(root / case.name)
    return root
