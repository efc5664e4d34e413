"""A lease on a registered model held in its ``adkd.lock`` tag, so concurrent promotions take turns.

A writer sets the tag, waits a settle time and proceeds only if the tag still names it, so of two racing
processes one waits for the other.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adkd.errors import ServiceError

LOCK_TAG = "adkd.lock"


def _owner() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _try_set_lock(client: Any, name: str, value: str) -> bool:
    """Write the lock tag; False when a racing writer's insert of the same tag won (retry later).

    MLflow's SQL store upserts a tag as select-then-insert, so two processes taking a free lock at the
    same moment can make one of them fail with a UNIQUE constraint error instead of overwriting.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_tag(name, LOCK_TAG, value)
    except MlflowException as exc:
        if "UNIQUE constraint" in str(exc) or "IntegrityError" in str(exc) or "duplicate key" in str(exc):
            return False
        raise
    return True


@contextmanager
def model_lock(
    client: Any, name: str, ttl_s: float = 120.0, timeout_s: float = 300.0, settle_s: float = 1.0
) -> Iterator[None]:
    """A lease on ``name`` held in its ``adkd.lock`` tag (compare after a settle time, then act)."""
    owner = _owner()
    deadline = time.monotonic() + timeout_s
    while True:
        current = (client.get_registered_model(name).tags or {}).get(LOCK_TAG, "")
        holder, _, expires = current.partition("|")
        busy = holder and holder != owner and float(expires or 0) > time.time()
        if not busy and _try_set_lock(client, name, f"{owner}|{time.time() + ttl_s}"):
            time.sleep(settle_s)
            current = (client.get_registered_model(name).tags or {}).get(LOCK_TAG, "")
            if current.startswith(f"{owner}|"):
                break
        if time.monotonic() > deadline:
            raise ServiceError(
                f"registered model '{name}' stayed locked by {holder or 'another process'} for {timeout_s:.0f}s; "
                f"retry, or delete the '{LOCK_TAG}' tag if that process died"
            )
        time.sleep(random.uniform(0.2, 0.8))
    try:
        yield
    finally:
        current = (client.get_registered_model(name).tags or {}).get(LOCK_TAG, "")
        if current.startswith(f"{owner}|"):
            client.delete_registered_model_tag(name, LOCK_TAG)
