"""A content fingerprint of a category's files, computed where the data is read (cached per process)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_FINGERPRINTS: dict[tuple[str, str], str] = {}
_FINGERPRINT_LOCK = threading.Lock()  # worker threads of one process may fingerprint the same root at once


def data_fingerprint(root: str | Path, category: str | None = None) -> str:
    """SHA-256 over the sorted relative file names and their content hashes ('' when not local)."""
    root_path = Path(str(root)).expanduser()
    target = root_path / category if category else root_path
    key = (str(target.resolve()) if target.exists() else str(target), category or "")
    with _FINGERPRINT_LOCK:
        if key in _FINGERPRINTS:
            return _FINGERPRINTS[key]
    if not target.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    value = digest.hexdigest()
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[key] = value
    return value
