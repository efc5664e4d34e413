"""Memory: the run's peaks are measured, and the teacher cache is sized before it is built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adkd.models.zoo import build_model
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.feature_cache import TeacherCache, check_fits, plan_cache, plan_val_cache, predicted_bytes
from adkd.pipelines.train.memory import free_disk_bytes, peak_memory
from adkd.pipelines.train.runtime import Runtime
from adkd.pipelines.train.steps import held_out_loss

CPU = Runtime(torch.device("cpu"), amp=False, channels_last=False)


def _status_bytes(field: str, path: str = "/proc/self/status") -> int:
    """A ``kB`` line of /proc/self/status (or /proc/meminfo) in bytes: the kernel's own figure."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in {path}")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="compares with Linux's /proc/self/status")
def test_peak_rss_counts_what_this_process_touched() -> None:
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB written, so resident
    resident = _status_bytes("VmRSS")
    after = peak_memory(torch.device("cpu"))
    peak = after["memory/peak_rss_mb"] * 2**20
    assert block.sum() == 64 * 2**20 and resident >= 64 * 2**20
    # At least the kernel's high-water mark of this process (VmHWM) and what is resident now, the block included
    # (4 MiB: the kernel's per-thread counters lag). It can be more: exec keeps the peak of the process that
    # started this one (getrusage's ru_maxrss), but a unit slip lands below these or above the machine's memory.
    assert peak >= max(_status_bytes("VmHWM"), resident) - 4 * 2**20, (peak, resident)
    assert peak < _status_bytes("MemTotal", "/proc/meminfo")
    assert "memory/peak_gpu_mb" not in after  # no GPU figure where the run has no GPU


def test_prediction_is_what_the_cache_then_holds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("rd", backbone="resnet18", weights="none")
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    predicted = predicted_bytes(model, images, CPU)
    cache = TeacherCache(model, images, CPU, 2, False, tmp_path)
    cache.batch(torch.arange(2))
    # ResNet18 layers 1-3 at 64 px: 64x16x16 + 128x8x8 + 256x4x4 floats per image.
    assert predicted == cache.nbytes == 5 * 4 * (64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4)


def test_a_cache_that_cannot_fit_is_refused_in_one_line(tmp_path: Path) -> None:
    notes: list[str] = []
    assert check_fits(2**20, 10, CPU, 2**30, tmp_path, notes) == (None, False)
    assert notes == ["teacher cache: 0.00 GiB predicted for 10 images, in cpu memory"]
    assert check_fits(2**20, 10, CPU, 0, tmp_path, notes) == (None, True)  # above the setting: a file
    assert (
        notes[-1]
        == f"teacher cache: 0.00 GiB predicted for 10 images, above teacher_cache_max_gb: a file in {tmp_path}"
    )
    too_big = free_disk_bytes(tmp_path) + 2**40
    reason, _ = check_fits(too_big, 1000, CPU, 0, tmp_path, [])
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"its {too_big / 2**30:.2f} GiB (the teacher features of 1000 images")
    assert f"do not fit on the disk of {tmp_path}" in reason


def test_held_out_loss_from_cached_teacher_features_is_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("rd", backbone="resnet18", weights="none")
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    plain = held_out_loss(model, images, CPU, 3, seed=1)
    cache = TeacherCache(model, images, CPU, 3, False, tmp_path, what="validation")
    cached = held_out_loss(model, images, CPU, 3, seed=1, teacher=cache)
    assert plain is not None and cached == plain  # the same batches, the same bits on CPU
    assert cache.notes[0].startswith("teacher features of the 6 validation images computed once")


def test_one_decision_counts_the_validation_images_and_holds_both_caches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("rd", backbone="resnet18", weights="none")
    train = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    val = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    per_image = predicted_bytes(model, train, CPU) // len(train)
    # Room for the training images' features alone, not for the validation images' beside them.
    config = TrainConfig(category="c", data="d", model="rd", teacher_cache_max_gb=6 * per_image / 2**30)
    notes: list[str] = []
    cache = plan_cache(config, model, train, CPU, tmp_path, notes, val)
    assert cache is not None and cache.on_disk and cache.device == torch.device("cpu")
    assert notes == [
        f"teacher cache: 0.00 GiB predicted for 8 images, above teacher_cache_max_gb: a file in {tmp_path}"
    ]
    val_cache = plan_val_cache(config, cache, val, tmp_path, notes)
    assert val_cache is not None and val_cache.on_disk
    for c in (cache, val_cache):
        c.batch(torch.arange(2))
        assert c.file_dir is not None and c.nbytes == 4 * per_image
        c.close()
    assert not list(tmp_path.glob("teacher-cache-*"))
