"""Shared set-up for the model tests: one CPU thread (the CI box has 2 shared cores), fixed seed."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # OpenMP spinning on oversubscribed cores makes small convolutions 10x slower than one thread.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
