"""The actors a finished run left in Ray's control store, by class: what a run started, beyond its tasks."""

from __future__ import annotations

from collections import Counter


def actor_classes() -> dict[str, int]:
    """How many actors of each class this Ray has seen (alive or dead); needs no dashboard (GCS's own table)."""
    from ray._private import state

    return dict(Counter(info["ActorClassName"].rsplit(".", 1)[-1] for info in state.actors().values()))
