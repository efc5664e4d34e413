"""What an exported graph file says about itself: its input and output names, its opset and its metadata_props.

Without torch: the Ray driver that registers a worker's model.onnx, the serving code and the CLI read these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "image_score", "normalized_score")


def meta_props(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata values as the strings ONNX stores (JSON for anything but a string)."""
    out = {}
    for key, value in meta.items():
        if value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return out


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into the file's metadata_props (replacing keys it has), checked by onnx."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.producer_name = "adkd"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata_props of an exported file, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out
