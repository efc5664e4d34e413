"""ONNX export: every model's graph (preprocessing included) reproduces PyTorch under onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from adkd.models.preprocess import normalize
from adkd.models.zoo import build_model
from adkd.pipelines.export import INPUT_NAME, OPSET, OUTPUT_NAMES, export_onnx, read_metadata
from adkd.pipelines.export.onnx_export import ExportError, ExportGraph

SIZE = 64
THRESHOLDS = {"image": 0.3, "pixel": 0.25, "score_min": 0.05, "score_max": 0.6}
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
BOTTLE = SHARED / "data" / "mvtec_ad_256" / "bottle"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"


def _images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=gen, dtype=torch.uint8)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reference(model: torch.nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The eval path as training runs it: NCHW uint8 → normalize → model."""
    with torch.inference_mode():
        amap, score = model(normalize(images.permute(0, 3, 1, 2)))
    return amap.numpy(), score.numpy()


def _assert_parity(path: Path, model: torch.nn.Module, images: torch.Tensor) -> None:
    ort_map, ort_score, ort_norm = _session(path).run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    ref_map, ref_score = _reference(model, images)
    assert ort_map.shape == (len(images), 1, SIZE, SIZE)
    assert ort_score.shape == (len(images),)
    map_range = float(ref_map.max() - ref_map.min())
    assert map_range > 0
    assert np.abs(ort_map - ref_map).max() <= 1e-4 * map_range
    assert np.abs(ort_score - ref_score).max() <= 1e-5 * max(1.0, float(np.abs(ref_score).max()))
    expected_norm = np.clip((ref_score - 0.3) / (0.6 - 0.05) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(ort_norm, expected_norm, atol=1e-5)


@pytest.mark.parametrize("name", ["rd", "mrkd", "stfpm", "stfpm-ae"])
def test_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(name, backbone="resnet18", weights="none").eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", SIZE, THRESHOLDS, {"model": name, "category": "toy"})

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == OPSET
    graph_input = proto.graph.input[0]
    assert graph_input.name == INPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    # Images enter at the graph's own size: no resize in front (only the anomaly map's upsampling).
    assert [n.name for n in proto.graph.node if n.op_type == "Resize" and n.name.startswith("/preprocess")] == []

    meta = read_metadata(path)
    assert meta["model"] == name and meta["category"] == "toy"
    assert meta["image_size"] == SIZE and meta["thresholds"]["image"] == pytest.approx(0.3)
    assert meta["parity"]["ok"] is True and meta["adkd_version"]

    # Batch sizes other than the example's (2) run: the batch axis is really dynamic.
    _assert_parity(path, model, _images(1, seed=1))
    _assert_parity(path, model, _images(3, seed=2))


@pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"real MVTec bottle images not found at {BOTTLE}")
def test_export_matches_pytorch_on_real_bottle_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("rd", backbone="resnet18", weights="none").eval()
    files = [
        sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[0],
        sorted((BOTTLE / "train" / "good").glob("*.png"))[0],
    ]
    images = torch.from_numpy(
        np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for f in files])
    )
    path = export_onnx(model, tmp_path / "rd.onnx", SIZE, THRESHOLDS, verify_images=images, verify_source="bottle")
    assert read_metadata(path)["parity"]["source"] == "bottle"
    _assert_parity(path, model, images)


@pytest.mark.skipif(not (BOTTLE.is_dir() and WEIGHTS.is_file()), reason=f"needs {BOTTLE} and {WEIGHTS}")
@pytest.mark.parametrize("name", ["rd", "stfpm"])
def test_export_with_the_real_mobilenet_teacher_on_bottle_images(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(name, backbone="mobilenet_v2", weights=str(WEIGHTS)).eval()
    files = sorted((BOTTLE / "test" / "contamination").glob("*.png"))[:2]
    images = torch.from_numpy(
        np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for f in files])
    )
    path = export_onnx(model, tmp_path / f"{name}.onnx", SIZE, THRESHOLDS, verify_images=images)
    _assert_parity(path, model, images)


def test_crop_inside_graph_matches_cropped_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("stfpm", backbone="resnet18", weights="none").eval()
    path = export_onnx(model, tmp_path / "crop.onnx", 80, THRESHOLDS, eval_size=SIZE)
    images = torch.randint(0, 256, (2, 80, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    ort_map, ort_score, _ = _session(path).run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    ref_map, ref_score = _reference(model, images[:, 8:72, 8:72, :])
    assert ort_map.shape == (2, 1, SIZE, SIZE)
    assert np.abs(ort_map - ref_map).max() <= 1e-4 * float(ref_map.max() - ref_map.min())
    np.testing.assert_allclose(ort_score, ref_score, rtol=1e-5, atol=1e-5)


class _NoisyModel(torch.nn.Module):
    """Eval output depends on fresh random numbers, so ONNX and PyTorch cannot agree."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = x.mean(dim=1, keepdim=True) + torch.rand_like(x[:, :1])
        return amap, amap.amax(dim=(1, 2, 3))


def test_failed_parity_raises_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_onnx(_NoisyModel(), out, SIZE, THRESHOLDS)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_thresholds_and_images_are_refused(tmp_path: Path) -> None:
    from adkd.errors import ConfigError

    model = build_model("stfpm", backbone="resnet18", weights="none").eval()
    with pytest.raises(ConfigError, match="score_max"):
        ExportGraph(model, SIZE, {"image": 0.1, "score_min": 0.0})
    with pytest.raises(ConfigError, match=r"uint8 \[N,64,64,3\]"):
        export_onnx(model, tmp_path / "x.onnx", SIZE, THRESHOLDS, verify_images=_images(2, 0).permute(0, 3, 1, 2))
