"""Score many image files in batches and write each one's overlay and mask: what `adkd predict` runs.

Writing an image's outputs (the heatmap blend, two PNG encodings) costs more than scoring it at 512 px
(benchmarks/predict_outputs.py), and both NumPy and Pillow's encoder release the GIL: so the writes run on a few
threads while the next batch is decoded and scored. Rows come back in input order whatever order the writes
finish in; a file that cannot be read is a failure row, and the others are scored.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adkd.errors import AdkdError
from adkd.pipelines.predict.outputs import unique_stem, write_image_outputs


def default_writers() -> int:
    """Threads that write outputs: one per CPU, at most 4 (the encoder's share of a batch is then hidden)."""
    return max(1, min(4, os.cpu_count() or 1))


def predict_files(
    predictor: Any,
    files: Sequence[Path],
    out: Path,
    *,
    batch_size: int = 8,
    writers: int | None = None,
    on_skip: Callable[[AdkdError], None] | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(a row per scored image with its overlay and mask paths, a failure per unreadable file), input order.

    ``on_skip``: told each file that cannot be read; ``on_done``: told how many files each batch finished.
    ``writers``: threads writing outputs (None: ``default_writers()``; 0: written in this thread, no overlap).
    """
    out.mkdir(parents=True, exist_ok=True)
    vmin, vmax = predictor.heat_range
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    used: set[str] = set()
    workers = default_writers() if writers is None else writers
    pending: deque[tuple[dict[str, Any], Future]] = deque()

    def settle(limit: int) -> None:  # at most ``limit`` writes in flight: images and maps held in memory are bounded
        while len(pending) > limit:
            row, future = pending.popleft()
            overlay, mask = future.result()
            row.update(overlay=str(overlay), mask=str(mask))

    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="adkd-write") as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            loaded, ok = [], []
            for path in chunk:
                try:
                    loaded.append(predictor.load(path))
                except AdkdError as exc:
                    failures.append({"image": str(path), "error": str(exc)})
                    if on_skip is not None:
                        on_skip(exc)
                    continue
                ok.append(path)
            if loaded:
                # Maps come back at each image's own size: overlays and masks match the input files.
                preds = predictor.predict_loaded(loaded, [str(p) for p in ok])
                for path, item, pred in zip(ok, loaded, preds):
                    row = pred.summary()
                    rows.append(row)
                    stem = unique_stem(path, used)
                    args = (pred, item.original, out, stem, vmin, vmax)
                    if workers == 0:
                        overlay, mask = write_image_outputs(*args)
                        row.update(overlay=str(overlay), mask=str(mask))
                    else:
                        pending.append((row, pool.submit(write_image_outputs, *args)))
            settle(workers)
            if on_done is not None:
                on_done(len(chunk))
        settle(0)
    return rows, failures
