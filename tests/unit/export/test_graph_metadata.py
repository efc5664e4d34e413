"""Metadata writes into an exported graph: keys replaced or added, the graph untouched, the file replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adkd.pipelines.export import graph_metadata
from adkd.pipelines.export.graph_metadata import read_metadata, set_metadata, update_props
from adkd.pipelines.export.onnx_export import write_thresholds


def _graph_file(path: Path) -> Path:
    """A small adkd-shaped graph: normalized_score = (image_score - threshold) / score_range."""
    nodes = [
        helper.make_node("Sub", ["image_score", "threshold"], ["centred"], name="/sub"),
        helper.make_node("Div", ["centred", "score_range"], ["normalized_score"], name="/div"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image_score", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("normalized_score", TensorProto.FLOAT, [None])],
        initializer=[
            onnx.numpy_helper.from_array(np.asarray(0.5, np.float32), "threshold"),
            onnx.numpy_helper.from_array(np.asarray(1.0, np.float32), "score_range"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"model": "rd", "thresholds": json.dumps({"image": 0.5})})
    onnx.save(model, str(path))
    return path


def test_keys_are_replaced_or_added_and_the_graph_is_unchanged(tmp_path: Path) -> None:
    path = _graph_file(tmp_path / "model.onnx")
    before = onnx.load(str(path)).graph
    set_metadata(path, {"model": "mrkd", "parity": json.dumps({"ok": True})})
    proto = onnx.load(str(path))
    assert [p.key for p in proto.metadata_props] == ["model", "thresholds", "parity"]  # no duplicate key
    assert read_metadata(path) == {"model": "mrkd", "thresholds": {"image": 0.5}, "parity": {"ok": True}}
    assert proto.graph == before and proto.producer_name == "adkd"
    onnx.checker.check_model(proto, full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _graph_file(tmp_path / "model.onnx")
    original = path.read_bytes()

    def half_written(proto: onnx.ModelProto, target: str) -> None:
        Path(target).write_bytes(proto.SerializeToString()[:20])
        raise OSError("No space left on device")

    monkeypatch.setattr(onnx, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        set_metadata(path, {"metrics": json.dumps({"test/image_auroc": 0.9})})
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_values_must_be_strings() -> None:
    with pytest.raises(TypeError, match=r"string keys and string values, got 'metrics': 0\.9"):
        update_props(onnx.ModelProto(), {"metrics": 0.9})  # type: ignore[dict-item]


def test_thresholds_and_more_metadata_are_one_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _graph_file(tmp_path / "model.onnx")
    saves: list[str] = []
    real = graph_metadata.save_replacing
    monkeypatch.setattr(
        "adkd.pipelines.export.onnx_export.save_replacing", lambda proto, p: (saves.append(p.name), real(proto, p))
    )
    fitted = {"image": 0.8, "pixel": 0.7, "score_min": 0.2, "score_max": 1.2}
    write_thresholds(path, fitted, {"normal_scores": json.dumps({"scores": [0.1]})})
    assert saves == ["model.onnx"]
    meta = read_metadata(path)
    assert meta["thresholds"] == fitted and meta["normal_scores"] == {"scores": [0.1]} and meta["model"] == "rd"
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert float(inits["threshold"]) == pytest.approx(0.8) and float(inits["score_range"]) == pytest.approx(1.0)
