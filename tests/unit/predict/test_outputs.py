"""What `adkd predict` writes per image: an overlay and a mask at the image's own size, PNGs encoded at zlib's
fastest level (at Pillow's default the encoding took most of the command's time: benchmarks/predict_outputs.py),
the same whether written inline or on threads beside the scoring, rows in input order."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adkd.models.zoo import build_model
from adkd.pipelines.export.onnx_export import export_onnx
from adkd.pipelines.predict import open_predictor
from adkd.pipelines.predict.folder import predict_files
from adkd.pipelines.predict.outputs import heatmap_overlay, write_image_outputs
from adkd.pipelines.predict.predictor import Prediction
from adkd.platform.station.inspector import overlay_png


def _zlib_level(png: Path | bytes) -> int:
    """FLEVEL of the first IDAT's zlib header: 0 fastest, 1 fast, 2 default, 3 best (RFC 1950)."""
    data, at = png if isinstance(png, bytes) else png.read_bytes(), 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            return data[at + 9] >> 6
        at += 12 + length
    raise AssertionError(f"{png} has no IDAT chunk")


def test_overlay_and_mask_are_the_image_size_and_written_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    amap = rng.random((48, 80)).astype(np.float32)
    pred = Prediction(0.9, 0.7, True, amap, amap > 0.5, "x.png")
    overlay, mask = write_image_outputs(pred, image, tmp_path, "x", 0.0, 1.0)
    assert np.array_equal(np.asarray(Image.open(overlay)), heatmap_overlay(image, amap, 0.0, 1.0))
    assert np.array_equal(np.asarray(Image.open(mask)) > 0, amap > 0.5)
    assert {_zlib_level(overlay), _zlib_level(mask)} == {0}  # zlib's "fastest" class
    station = overlay_png(amap, image, 0.0, 1.0)  # the station's overlays too
    assert _zlib_level(station) == 0 and np.array_equal(
        np.asarray(Image.open(io.BytesIO(station))), np.asarray(Image.open(overlay))
    )


def test_files_are_scored_in_order_and_written_alike_inline_or_on_writer_threads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("stfpm", backbone="resnet18", weights="none").eval()
    thresholds = {"image": 0.3, "pixel": 0.25, "score_min": 0.0, "score_max": 1.0}
    predictor = open_predictor(export_onnx(model, tmp_path / "m.onnx", 64, thresholds), "onnxruntime")
    rng = np.random.default_rng(1)
    files = []
    for i, (h, w) in enumerate([(64, 64), (40, 90), (64, 64), (70, 50), (64, 64)]):
        files.append(tmp_path / "in" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    files.insert(2, tmp_path / "in" / "broken.png")
    files[2].write_bytes(b"not a png")
    results, done, skipped = {}, [], []
    for writers in (0, 1, 3):
        out = tmp_path / f"out{writers}"
        results[writers] = predict_files(
            predictor, files, out, batch_size=2, writers=writers, on_skip=skipped.append, on_done=done.append
        )
        rows, failures = results[writers]
        assert [Path(r["image"]).name for r in rows] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
        assert [Path(f["image"]).name for f in failures] == ["broken.png"]
        for row in rows:  # each row's outputs are its own image's, at that image's size
            size = Image.open(row["image"]).size
            assert Image.open(row["overlay"]).size == size == Image.open(row["mask"]).size
    assert len(skipped) == 3 and sum(done) == 3 * len(files)
    for writers in (1, 3):
        for a, b in zip(results[0][0], results[writers][0]):
            assert a["score"] == b["score"]
            assert Path(a["overlay"]).read_bytes() == Path(b["overlay"]).read_bytes()
            assert Path(a["mask"]).read_bytes() == Path(b["mask"]).read_bytes()
