"""Teacher feature cache: the frozen teacher's features of the training images, computed once per run.

The teacher is frozen (no gradients, BatchNorm in eval mode) and the training images are not augmented,
so its features for an image are the same every epoch. The cache computes them once, at the first
training batch (so the cost shows in epoch 1's time), keeps them in the training dtype (bf16 under
autocast) on the training device, or in a memory-mapped file in the run folder when they exceed
``teacher_cache_max_gb`` or half the free memory (``plan_cache`` decides, for the training and validation
images together), and hands each step the rows of its batch. Models take them through
``forward(images, teacher=...)`` and ``pretrain_loss(images, teacher=...)``.

The features are computed in batches of ``batch_size`` with no batch of one: on CPU the convolutions then
give the same bits as inside the training step (tests/integration/test_feature_cache.py checks the trained
weights). Building consumes no random numbers, so the training RNG stream is unchanged.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError

# TrainConfig fields whose truthy value means the training images change between epochs.
_AUGMENTATION_PREFIX = "augment"


def augmentation_settings(config: Any) -> list[str]:
    """The names of the input-augmentation settings that are switched on in ``config``."""
    fields = getattr(type(config), "model_fields", {})
    return [name for name in fields if name.startswith(_AUGMENTATION_PREFIX) and getattr(config, name)]


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot train from cached teacher features, or None when it can."""
    teacher = getattr(model, "teacher", None)
    if not isinstance(teacher, nn.Module):
        return f"model {type(model).__name__} has no `teacher` module"
    if any(p.requires_grad for p in teacher.parameters()):
        return "its teacher has trainable parameters"
    if "teacher" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no `teacher` features"
    was_training = model.training
    model.train()
    teacher_trains = teacher.training
    model.train(was_training)
    if teacher_trains:
        return "its teacher switches to train mode (BatchNorm statistics would change)"
    return None


class TeacherCache:
    """Teacher features of ``images`` (uint8 [N,3,H,W] on the device), built on first use.

    ``on_disk``: held in a memory-mapped file in a new folder under ``spill_dir`` (removed by ``close``)
    instead of the training device's memory.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        runtime: Any,
        batch_size: int,
        on_disk: bool,
        spill_dir: Path,
        notes: list[str] | None = None,
        what: str = "training",
    ) -> None:
        self.model, self.images, self.rt, self.what = model, images, runtime, what
        self.notes = notes if notes is not None else []
        self.batch_size = max(int(batch_size), 2)
        self.on_disk, self.spill_dir = on_disk, spill_dir
        self.levels: list[torch.Tensor] | None = None
        self.channels_last: list[bool] = []
        self.file_dir: Path | None = None

    @property
    def device(self) -> torch.device:
        """Where the features are held: index ``batch`` with a tensor there and the rows take no copy first."""
        return torch.device("cpu") if self.on_disk else self.rt.device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.levels or [])

    def batch(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The features of images ``idx``, as the teacher would return them inside the training step."""
        if self.levels is None:
            self._build()
        assert self.levels is not None
        rows = idx.to(self.levels[0].device)
        out = []
        for level, cl in zip(self.levels, self.channels_last):
            t = level[rows].to(self.rt.device, non_blocking=True)
            out.append(t.contiguous(memory_format=torch.channels_last) if cl else t)
        return out

    def _chunks(self) -> list[slice]:
        n, bs = len(self.images), self.batch_size
        starts = list(range(0, n, bs))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()  # fold a last chunk of one image into the one before: batch-1 kernels differ
        return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]

    def _teacher(self, chunk: slice) -> list[torch.Tensor]:
        from adkd.pipelines.train.runtime import autocast

        x = self.rt.prepare(self.images[chunk])
        with torch.no_grad(), autocast(self.rt.device, self.rt.amp):
            return list(self.model.teacher(x))

    def _build(self) -> None:
        chunks = self._chunks()
        n = len(self.images)
        first = self._teacher(chunks[0])
        self.channels_last = [t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) for t in first]
        if self.on_disk:
            self.levels = self._file_tensors(first, n)
        else:
            self.levels = [torch.empty((n, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in first]
        for chunk, feats in zip(chunks, [first, *(self._teacher(c) for c in chunks[1:])]):
            for store, t in zip(self.levels, feats):
                store[chunk] = t.to(store.device)
        where = f"a file in {self.spill_dir}" if self.on_disk else f"{self.levels[0].device.type} memory"
        self.notes.append(
            f"teacher features of the {n} {self.what} images computed once ({self.nbytes / 2**20:.1f} MiB "
            f"{self.levels[0].dtype}, in {where})"
        )

    def _file_tensors(self, like: list[torch.Tensor], n: int) -> list[torch.Tensor]:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.file_dir = Path(tempfile.mkdtemp(prefix="teacher-cache-", dir=self.spill_dir))
        out = []
        for i, t in enumerate(like):
            shape = (n, *t.shape[1:])
            numel = int(torch.Size(shape).numel())
            path = self.file_dir / f"level{i}.bin"
            out.append(torch.from_file(str(path), shared=True, size=numel, dtype=t.dtype).view(shape))
        return out

    def close(self) -> None:
        """Drop the features and remove the spill file, if any."""
        self.levels = None
        if self.file_dir is not None:
            shutil.rmtree(self.file_dir, ignore_errors=True)
            self.file_dir = None


def plan_cache(
    config: Any,
    model: nn.Module,
    images: torch.Tensor,
    runtime: Any,
    run_dir: Path,
    notes: list[str],
    val_images: Any = None,
) -> TeacherCache | None:
    """The run's teacher cache, or None when ``teacher_cache`` is off or (left on auto) cannot apply.

    ``teacher_cache=true`` with an augmentation on or a model that cannot use it is a ConfigError. The size
    check counts the validation images that ``plan_val_cache`` caches beside (``val_images``), and both caches
    are held where it decides.
    """
    wanted = getattr(config, "teacher_cache", None)
    if wanted is False:
        return None
    augments = augmentation_settings(config)
    reason = (f"input augmentation is on ({', '.join(augments)})" if augments else None) or unsupported_reason(model)
    if reason is not None:
        if wanted:
            raise ConfigError(f"teacher_cache=true but {reason}; set teacher_cache=false or leave it unset")
        notes.append(f"teacher feature cache off: {reason}")
        return None
    max_bytes = int(float(getattr(config, "teacher_cache_max_gb", 4.0)) * 1024**3)
    n = len(images) + _cached_val_images(val_images)
    refusal, on_disk = check_fits(predicted_bytes(model, images, runtime, n), n, runtime, max_bytes, run_dir, notes)
    if refusal is not None:
        if wanted:
            raise ConfigError(f"teacher_cache=true but {refusal}; set teacher_cache=false")
        notes.append(f"teacher feature cache off: {refusal}")
        return None
    return TeacherCache(model, images, runtime, config.batch_size, on_disk, run_dir, notes)


def _cached_val_images(images: Any) -> int:
    """How many validation images get a cache of their own (whole images; not the tiles of a tiled run)."""
    return len(images) if isinstance(images, torch.Tensor) else 0


def predicted_bytes(model: nn.Module, images: torch.Tensor, runtime: Any, n: int | None = None) -> int:
    """Bytes a cache will hold for ``n`` images like ``images`` (default: all of them): the teacher's features
    of two of them, in the training dtype, scaled (a shape pass, before anything is stored)."""
    from adkd.pipelines.train.runtime import autocast

    probe = runtime.prepare(images[: min(2, len(images))])
    was_training = model.training
    model.train()  # the features the training step asks for (the teacher itself stays in eval mode)
    try:
        with torch.no_grad(), autocast(runtime.device, runtime.amp):
            feats = list(model.teacher(probe))
    finally:
        model.train(was_training)
    per_image = sum(t[0].numel() * t.element_size() for t in feats)
    return per_image * (len(images) if n is None else n)


def check_fits(
    total: int, n: int, runtime: Any, max_bytes: int, spill_dir: Path, notes: list[str]
) -> tuple[str | None, bool]:
    """(why a cache of ``total`` bytes cannot be held, or None; whether it goes to a file); a note says where.

    Up to ``max_bytes`` it stays in the device's memory when at most half of what is free there now (the
    training's own activations come after it); otherwise it is a file in ``spill_dir``, which must have room.
    """
    from adkd.pipelines.train.memory import available_bytes, free_disk_bytes

    gib, device = total / 1024**3, runtime.device.type
    what = f"teacher cache: {gib:.2f} GiB predicted for {n} images"
    if total <= max_bytes:
        free = available_bytes(runtime.device)
        if total <= free // 2:
            notes.append(f"{what}, in {device} memory")
            return None, False
        why = f"more than half the free {device} memory ({free / 1024**3:.2f} GiB)"
    else:
        why = "above teacher_cache_max_gb"
    free_disk = free_disk_bytes(spill_dir)
    if total < free_disk:
        notes.append(f"{what}, {why}: a file in {spill_dir}")
        return None, True
    return (
        f"its {gib:.2f} GiB (the teacher features of {n} images, {why}) do not fit on the disk of {spill_dir} "
        f"({free_disk / 1024**3:.2f} GiB free)"
    ), False


def plan_val_cache(
    config: Any, train_cache: TeacherCache | None, images: Any, run_dir: Path, notes: list[str]
) -> TeacherCache | None:
    """The teacher features of the validation images for the per-epoch held-out loss, when training caches its
    own (same model, same precision, held where ``plan_cache`` decided for both); built at the first held-out
    loss, in ``eval_batch_size`` chunks."""
    if train_cache is None or not _cached_val_images(images):
        return None
    return TeacherCache(
        train_cache.model,
        images,
        train_cache.rt,
        config.eval_batch_size,
        train_cache.on_disk,
        run_dir,
        notes,
        what="validation",
    )
