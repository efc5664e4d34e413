"""Memory layout of 4-D tensors: channels-last maps and weights seen as the dense arrays they are."""

from __future__ import annotations

import torch

NHWC = (0, 2, 3, 1)  # the order a channels-last [N, C, H, W] tensor lies in memory


def channels_last_only(t: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels-last and not also contiguous (where ``t.permute(*NHWC)`` is a dense view)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
