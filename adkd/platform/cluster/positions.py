"""Per-position tiling on Ray: a category's tile positions trained as parallel runs, like categories.

``tiling.mode=per_position`` trains one model per tile position (``adkd.pipelines.train.tiled``). Here the
position jobs go to ``run_all_categories`` as runs keyed ``<category>-posNNN``: each gets the resources of
a run, restarts from its checkpoints like a category, and its outputs come back under
``<run_dir>/positions/``. ``PositionTimes`` records when each job started and ended (as the driver saw its
events), so the run can say how many positions trained at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adkd.pipelines.train.callbacks import TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.positions import PositionRelay
from adkd.platform.cluster.listeners import RunListener
from adkd.platform.cluster.worker import Event

RunConfigs = Callable[..., Any]  # adkd.platform.runs.train_configs, bound to the run's settings and plan


def position_key(config: TrainConfig) -> str:
    return f"{config.category}-pos{config.tiling.position:03d}"


class PositionTimes(RunListener):
    """When each run started (its first worker event) and ended (its done or failed event), driver time; each
    position's epochs relayed to ``callbacks`` (the assembled run's) under ``posNNN/``."""

    def __init__(self, callbacks: Sequence[TrainCallback] = ()) -> None:
        self.callbacks = callbacks
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def callback(self, key: str) -> TrainCallback:
        return PositionRelay(self.callbacks, int(key.rsplit("-pos", 1)[1]))

    def event(self, event: Event) -> None:
        key, kind, now = event.get("category", ""), event.get("kind"), time.time()
        if kind in ("start", "worker"):
            self.started.setdefault(key, now)
        elif kind in ("done", "failed"):
            self.ended[key] = now

    def most_at_once(self) -> int:
        """The largest number of runs whose [start, end] intervals overlap."""
        marks = sorted(
            [(t, 1) for k, t in self.started.items() if k in self.ended]
            + [(t, -1) for k, t in self.ended.items() if k in self.started],
            key=lambda m: (m[0], m[1]),
        )
        now = best = 0
        for _, step in marks:
            now += step
            best = max(best, now)
        return best


class RayPositionTrainer:
    """A ``PositionTrainer`` (``adkd.pipelines.train.tiled``) that trains the positions at once on Ray."""

    def __init__(self, run_configs: RunConfigs, callbacks: Sequence[TrainCallback] = ()) -> None:
        self.run_configs = run_configs
        self.callbacks = callbacks
        self.notes: list[str] = []

    def __call__(self, configs: list[TrainConfig]) -> list[TrainResult]:
        keys = [position_key(c) for c in configs]
        folder = Path(configs[0].out_dir).parent  # <run_dir>/positions
        times = PositionTimes(self.callbacks)
        outcome = self.run_configs(configs, listeners=[times], keys=keys, runs_dir=folder)
        at_once = times.most_at_once()
        summary = {
            "positions": len(configs),
            "most_at_once": at_once,
            "wall_s": outcome.wall_s,
            "run_dir": str(outcome.run_dir),
            "intervals": {k: [times.started.get(k), times.ended.get(k)] for k in keys},
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "positions.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.notes.append(
            f"per-position: {len(configs)} positions trained on Ray in {outcome.wall_s:.0f} s, at most {at_once} "
            "at once (resources of a run each, like categories)"
        )
        return list(outcome.results)
