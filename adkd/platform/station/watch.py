"""A folder a camera writes into: every new image file is inspected once, when it has stopped growing.

Polling (no inotify: it works the same on network shares). A file counts as written when its size and
modification time are unchanged between two polls. Across restarts a file is not inspected again when the
log already holds a verdict for its content from this folder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from adkd.errors import AdkdError
from adkd.pipelines.predict.inputs import IMAGE_SUFFIXES
from adkd.platform.station.inspector import Inspection, Station

log = logging.getLogger(__name__)
SOURCE = "watch"


class FolderWatcher:
    """Inspect new images under ``folder`` for ``category`` every ``interval_s`` seconds, in a thread."""

    def __init__(
        self,
        station: Station,
        category: str,
        folder: Path,
        interval_s: float = 1.0,
        on_result: Callable[[Inspection | None, Path, str | None], None] | None = None,
    ) -> None:
        self.station = station
        self.category = category
        self.folder = Path(folder)
        self.interval_s = interval_s
        self.on_result = on_result
        self._sizes: dict[Path, tuple[int, float]] = {}
        self._done: set[Path] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.inspected = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"watch-{self.category}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # a vanished folder or a database hiccup must not end the watcher
                log.exception("watching %s failed; retrying", self.folder)
            self._stop.wait(self.interval_s)

    def poll(self) -> int:
        """One pass over the folder; returns how many files were inspected."""
        if not self.folder.is_dir():
            return 0
        count = 0
        for path in sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if path in self._done or self._stop.is_set() or path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            now = (stat.st_size, stat.st_mtime)
            if self._sizes.get(path) != now:  # new or still growing: look again next poll
                self._sizes[path] = now
                continue
            self._done.add(path)
            self._sizes.pop(path, None)
            count += self._inspect(path)
        return count

    def _inspect(self, path: Path) -> int:
        try:
            data = path.read_bytes()
        except OSError:
            return 0
        import hashlib

        if self.station.log.seen(self.category, hashlib.sha256(data).hexdigest(), SOURCE):
            return 0
        try:
            result = self.station.inspect(self.category, data, path.name, SOURCE)
        except AdkdError as exc:
            self.failed += 1
            log.warning("%s", exc)
            if self.on_result:
                self.on_result(None, path, str(exc))
            return 0
        self.inspected += 1
        if self.on_result:
            self.on_result(result, path, None)
        return 1
