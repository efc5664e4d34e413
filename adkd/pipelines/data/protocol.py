"""A data root's protocol note: which benchmark protocol built it and the published figures to compare with.

``adkd data download cifar10`` writes ``ROOT/adkd_protocol.json``; the results table of
``adkd train --all-categories`` reads it to show the paper's mean beside the measured one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROTOCOL_FILE = "adkd_protocol.json"


def write_protocol(root: Path, name: str, reference: dict[str, Any]) -> Path:
    """Record the protocol ``name`` and its reference figures (``label`` and ``test/*`` fractions)."""
    path = Path(root) / PROTOCOL_FILE
    path.write_text(json.dumps({"protocol": name, "reference": reference}, indent=2) + "\n")
    return path


def read_reference(root: str | Path) -> dict[str, Any] | None:
    """The reference figures of a local data root, or None (no note, an s3:// root or an unreadable note)."""
    if str(root).startswith("s3://"):
        return None
    path = Path(root).expanduser() / PROTOCOL_FILE
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    reference = note.get("reference") if isinstance(note, dict) else None
    return reference if isinstance(reference, dict) else None
