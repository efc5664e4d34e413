"""Data-parallel training of one category: one process per rank, the process group set up by the caller.

Ray Train's ``TorchTrainer`` (or ``torchrun``) initialises ``torch.distributed`` (gloo on CPU, NCCL on
GPU) before the engine runs (a one-worker Ray run has no process group: ``DistContext.detect`` is then
single). With more than one rank the engine then

- trains every rank on a disjoint, equally sized shard of each epoch's images (``DistContext.shard``),
  ``batch_size`` images per rank and step, so the global batch is ``world_size * batch_size``;
- averages the gradients of the parameters the optimiser owns after every backward pass, together with
  the loss, in one bucketed all-reduce (``average_gradients``);
- averages the BatchNorm statistics of the trained modules at the end of every epoch, so all ranks hold
  the same state;
- leaves validation, thresholds, evaluation and every file to rank 0 (``on_main``).

Why not ``DistributedDataParallel``: the models compute their loss outside ``forward`` (``model.loss``,
``pretrain_loss``), stfpm-ae switches its autoencoder's ``requires_grad`` between phases, and the frozen
teacher lives in the same module. DDP's reducer hooks assume none of that; averaging the gradients after
``backward`` is what DDP computes, without overlapping communication with the backward pass.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

_BUCKET_BYTES = 32 * 2**20  # one all-reduce per ~32 MB of tensors of one dtype and device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group; ``world_size == 1`` means a single process."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def detect(cls) -> DistContext:
        """Data-parallel when torch.distributed is initialised with more than one rank, else single."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size())
        return cls()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- data
    def shard(self, n: int, seed: int, epoch: int) -> torch.Tensor:
        """This rank's image indices for an epoch: a disjoint, equal share of a (seed, epoch) shuffle.

        The last ``n % world_size`` images of the shuffle are dropped, so every rank runs the same
        number of steps (a different few each epoch).
        """
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    # -- collectives (no-ops for a single process)
    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace every tensor, in place, by its mean over the ranks."""
        if self.enabled:
            for bucket in _buckets(tensors):
                flat = _flatten(bucket)
                dist.all_reduce(flat)
                flat.div_(self.world_size)
                _unflatten(flat, bucket)

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite every tensor, in place, with rank 0's."""
        if self.enabled:
            for bucket in _buckets(tensors):
                flat = _flatten(bucket)
                dist.broadcast(flat, src=0)
                _unflatten(flat, bucket)

    def average_gradients(self, params: Iterable[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Average the gradients of ``params`` over the ranks, in place; return the loss averaged too."""
        loss = loss.detach().float().reshape(1).clone()
        if self.enabled:
            # Parameters without a gradient are the same on every rank: same model, same code path.
            self.average_([p.grad for p in params if p.grad is not None] + [loss])
        return loss[0]

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank waits for it and gets its result, or raises its error.

        Waiting here is the barrier that makes rank 0's files (checkpoints) complete before any rank
        goes on, and sharing the error keeps the other ranks out of collectives rank 0 never reaches.
        """
        if not self.enabled:
            return fn()
        outcome: tuple[str, Any] | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except Exception as exc:
                error, outcome = exc, ("error", _picklable(exc))
        box = [outcome]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    @contextlib.contextmanager
    def agreement(self) -> Iterator[None]:
        """Run a block that uses no collectives; if it fails on any rank, raise on every rank.

        A rank that failed alone would otherwise leave the others waiting in the next collective
        until the process group times out.
        """
        if not self.enabled:
            yield
            return
        error: Exception | None = None
        try:
            yield
        except Exception as exc:
            error = exc
        errors = self.gather(_picklable(error) if error is not None else None)
        if error is not None:
            raise error
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (feature masks, dropout) after the shared initialisation."""
    return seed + 7_919 * (rank + 1)


def synced_state(model: nn.Module) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    """The trained parameters and the floating buffers (BatchNorm statistics) of the modules that own them.

    The frozen teacher is in neither: it is identical on every rank and never changes.
    """
    if hasattr(model, "trainable_parameters"):
        params = list(model.trainable_parameters())
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    ids = {id(p) for p in params}
    params = list({id(p): p for p in params}.values())  # shared parameters once
    buffers: list[torch.Tensor] = []
    for module in model.modules():
        if any(id(p) in ids for p in module.parameters(recurse=False)):
            buffers.extend(b for b in module.buffers(recurse=False) if b.is_floating_point())
    return params, buffers


def fingerprint(model: nn.Module) -> list[float]:
    """Per-tensor float64 sums of the whole state: equal on ranks that hold the same weights."""
    return [float(t.detach().double().sum()) for t in model.state_dict().values() if t.is_floating_point()]


# ----------------------------------------------------------------------------- helpers


def _buckets(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive groups of one dtype and device, at most ~_BUCKET_BYTES each (order kept)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        other_kind = bool(bucket) and (t.dtype, t.device) != (bucket[0].dtype, bucket[0].device)
        if bucket and (other_kind or size + nbytes > _BUCKET_BYTES):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view(t.shape))
            offset += n


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (AdkdError does), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
