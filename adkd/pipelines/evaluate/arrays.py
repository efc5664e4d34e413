"""Input checks shared by metrics and plots: numpy or torch in, validated numpy arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np

from adkd.errors import DataError


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of an array-like or a tensor (bf16/fp16 tensors widened to float32)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.dtype.itemsize < 4:  # bf16/fp16 have no numpy view
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as an array ({exc}); pass a numpy array or tensor") from exc


def as_maps(x: Any, name: str) -> np.ndarray:
    """[N, H, W] from [N, H, W] or [N, 1, H, W]."""
    a = to_numpy(x, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.size == 0:
        raise DataError(f"{name}: expected shape [N, H, W] or [N, 1, H, W], got {list(a.shape)}")
    return a


def as_vector(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D array."""
    a = to_numpy(x, name).reshape(-1)
    if a.size == 0:
        raise DataError(f"{name}: is empty; evaluate at least one test image")
    return a


def check_finite(a: np.ndarray, name: str) -> None:
    """Reject NaN/inf, which only a diverged model produces."""
    if not np.isfinite(a).all():
        raise DataError(
            f"{name}: contains NaN or infinite values; the model diverged "
            "(lower the learning rate or check the checkpoint)"
        )


def binary(a: np.ndarray) -> np.ndarray:
    """Boolean labels/masks: {0,1}, {0,255} and bool all work."""
    return a > 0.5 if a.dtype != bool else a
