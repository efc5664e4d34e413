"""What a GPU test reads from a finished run to know it ran on the GPU with the GPU's defaults."""

from __future__ import annotations

# The cpu-smoke rd model's weights alone are 10 MiB in fp32, before any activation or optimizer state.
MIN_PEAK_BYTES = 10 * 2**20


def ran_on_cuda_with_the_defaults(notes: list[str], peak_bytes: int) -> bool:
    """The run's own record of its runtime says CUDA, bf16 and channels-last, and its tensors were on the GPU."""
    return "bf16 autocast, channels-last on cuda (settings amp, channels_last)" in notes and peak_bytes > MIN_PEAK_BYTES
