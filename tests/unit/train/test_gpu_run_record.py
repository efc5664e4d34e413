"""The GPU test's evidence that training ran on the GPU, held against runs that did not (no GPU needed)."""

from __future__ import annotations

import torch

from adkd.pipelines.inference.runtime import Runtime
from tests.gpu.run_record import MIN_PEAK_BYTES, ran_on_cuda_with_the_defaults


def _note(device: str, amp: bool, channels_last: bool) -> str:
    return Runtime(torch.device(device), amp=amp, channels_last=channels_last).describe()


def test_a_cuda_run_with_the_gpus_defaults_passes() -> None:
    notes = ["data gate passed", _note("cuda", amp=True, channels_last=True)]
    assert ran_on_cuda_with_the_defaults(notes, MIN_PEAK_BYTES + 1)


def test_a_cpu_run_fails_though_it_trained_and_used_bf16() -> None:
    # what "images_per_s > 0" let pass: a run that fell back to the CPU
    assert not ran_on_cuda_with_the_defaults([_note("cpu", amp=True, channels_last=True)], MIN_PEAK_BYTES + 1)


def test_a_cuda_run_off_the_defaults_or_with_nothing_on_the_gpu_fails() -> None:
    assert not ran_on_cuda_with_the_defaults([_note("cuda", amp=False, channels_last=True)], MIN_PEAK_BYTES + 1)
    assert not ran_on_cuda_with_the_defaults([_note("cuda", amp=True, channels_last=False)], MIN_PEAK_BYTES + 1)
    assert not ran_on_cuda_with_the_defaults([_note("cuda", amp=True, channels_last=True)], 0)
