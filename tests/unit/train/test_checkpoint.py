"""Atomic checkpoint writes, safe reads, and the RNG/data-order pieces that make resume exact."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from adkd.errors import ConfigError
from adkd.pipelines.train.checkpoint import read_checkpoint, save_checkpoint
from adkd.pipelines.train.runtime import batches, epoch_order, rng_state, set_rng_state


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path) -> None:
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, {"model_state": {"w": torch.ones(2)}, "config": {}, "format": 1})
    save_checkpoint(path, {"model_state": {"w": torch.zeros(2)}, "config": {}, "format": 1})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert torch.equal(read_checkpoint(path)["model_state"]["w"], torch.zeros(2))


def test_failed_save_keeps_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_state": {"w": torch.ones(2)}, "config": {}})
    with pytest.raises(Exception):  # noqa: B017 - torch.save of a lambda: pickling fails midway
        save_checkpoint(path, {"model_state": {"w": torch.zeros(2)}, "config": {}, "bad": lambda: 0})
    assert torch.equal(read_checkpoint(path)["model_state"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_checkpoints_give_clear_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ConfigError, match="not an adkd checkpoint"):
        read_checkpoint(other)
    # An exported graph passed for its checkpoint, and a pickle holding objects: one line each, no page of advice.
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x08\x08")
    with pytest.raises(ConfigError) as err:
        read_checkpoint(graph)
    assert str(err.value) == (
        f"checkpoint {graph} is an exported ONNX model, not a checkpoint; pass the model.pt `adkd train` wrote "
        "beside it"
    )
    objects = tmp_path / "objects.pt"
    torch.save({"when": Path("x")}, objects)
    with pytest.raises(ConfigError) as err:
        read_checkpoint(objects)
    assert str(err.value) == (
        f"checkpoint {objects} cannot be read (it holds objects other than tensors and plain data, which adkd does "
        "not unpickle); it is not an adkd checkpoint"
    )


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path) -> None:
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"model_state": {}, "config": {}, "rng": rng_state()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    set_rng_state(read_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    torch.manual_seed(0)
    a = epoch_order(50, seed=3, epoch=1)
    torch.rand(100)  # global RNG use must not matter
    assert torch.equal(a, epoch_order(50, seed=3, epoch=1))
    assert not torch.equal(a, epoch_order(50, seed=3, epoch=2))
    assert not torch.equal(a, epoch_order(50, seed=4, epoch=1))
    assert sorted(a.tolist()) == list(range(50))


def test_batches_drop_only_a_trailing_single_image() -> None:
    sizes = [len(b) for b in batches(torch.arange(17), 8)]
    assert sizes == [8, 8]
    assert [len(b) for b in batches(torch.arange(18), 8)] == [8, 8, 2]
    assert [len(b) for b in batches(torch.arange(1), 8)] == [1]
