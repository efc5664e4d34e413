"""What an exported graph file says about itself: its input and output names, its opset and its metadata_props.

Without torch: the Ray driver that registers a worker's model.onnx, the serving code and the CLI read these.
"""

from __future__ import annotations

import json
import os
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


def update_props(proto: Any, props: dict[str, str]) -> None:
    """Write ``props`` into an in-memory ModelProto's metadata_props (replacing keys it has)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if not (isinstance(key, str) and key and isinstance(value, str)):
            raise TypeError(f"ONNX metadata takes non-empty string keys and string values, got {key!r}: {value!r}")
        if key in existing:
            existing[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.producer_name = "adkd"


def save_replacing(proto: Any, path: Path) -> None:
    """Save ``proto`` over ``path`` through a sibling temporary file: the old file or the new, never half of one."""
    import onnx

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into the file's metadata_props (replacing keys it has); the file is replaced whole.

    No checker here: metadata cannot change the graph, which its export checked once. A full check on each of a
    run's five metadata writes re-ran shape inference over the whole graph (1.4 s of the 3.2 s each write took
    on the paper's 434 MB WideResNet50 rd file).
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    update_props(proto, props)
    save_replacing(proto, path)


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
