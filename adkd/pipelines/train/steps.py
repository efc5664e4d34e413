"""One training step, the held-out loss, and the optimisers and scheduler of a run.

Scoring images (maps and image scores) is ``adkd.pipelines.inference``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.models.components.layout import NHWC, channels_last_only
from adkd.models.stfpm_ae import autoencoder_training
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.distributed import DistContext
from adkd.pipelines.train.runtime import Runtime, autocast


def _check_finite(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {float(loss)}")


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    runtime: Runtime,
    *,
    pretrain: bool = False,
    grad_clip_norm: float | None = None,
    dist: DistContext | None = None,
    teacher: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimiser step on prepared ``images``; returns the detached loss (averaged over ranks).

    Data-parallel, the gradients of the optimiser's parameters are averaged over the ranks before
    clipping and stepping, so every rank applies the same update. A non-finite loss raises
    FloatingPointError before the step (on every rank alike); on one CUDA device the step does not wait
    for the loss (a host sync per step idles the GPU while the next batch could be queued), and the caller
    checks the epoch's loss total instead. ``teacher``: cached teacher features.
    """
    dist = dist or DistContext()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    cached = {} if teacher is None else {"teacher": teacher}
    with autocast(runtime.device, runtime.amp):
        loss = model.pretrain_loss(images, **cached) if pretrain else model.loss(model(images, **cached))
    optimizer.zero_grad(set_to_none=True)
    if dist.enabled:
        loss.backward()
        loss = dist.average_gradients(params, loss)
        _check_finite(loss)
    else:
        if runtime.device.type != "cuda":  # free on CPU, where every op has finished when it returns
            _check_finite(loss)
        loss.backward()
    if grad_clip_norm:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip_norm)
    optimizer.step()
    return loss.detach()


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Train-mode forward (so it returns the loss inputs) with BatchNorm and Dropout frozen."""
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Dropout):
            module.eval()
    try:
        yield
    finally:
        model.train(was_training)


def held_out_loss(
    model: nn.Module,
    images: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    seed: int,
    pretrain: bool = False,
    teacher: Any | None = None,
) -> float | None:
    """Mean loss over ``images`` without touching BatchNorm statistics or the training RNG stream.

    ``teacher``: a ``feature_cache.TeacherCache`` over ``images`` (built with ``batch_size``): the frozen
    teacher's features come from it instead of a forward pass every epoch. One host sync, at the end.
    """
    if len(images) == 0:
        return None
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    total, count = torch.zeros((), device=runtime.device), 0
    with torch.random.fork_rng(devices=devices), loss_mode(model), torch.no_grad():
        torch.manual_seed(seed)  # the same masks every epoch: comparable numbers
        for start in range(0, len(images), batch_size):
            x = runtime.prepare(images[start : start + batch_size])
            cached = {}
            if teacher is not None:  # the rows made where the features are held: no copy for the host to wait on
                cached["teacher"] = teacher.batch(torch.arange(start, start + len(x), device=teacher.device))
            with autocast(runtime.device, runtime.amp):
                loss = model.pretrain_loss(x, **cached) if pretrain else model.loss(model(x, **cached))
            total += loss.detach().float() * len(x)
            count += len(x)
    return float(total) / count


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The joint-phase optimiser over ``param_groups()``; an autoencoder gets its schedule's ``lr`` (stfpm-ae)."""
    opt = config.optimizer
    ae = autoencoder_training(model)
    ae_lr = (ae.ae_schedule.lr if ae is not None else None) or opt.lr
    groups = []
    for role, params in model.param_groups().items():
        lr = ae_lr if role == "autoencoder" else opt.lr
        groups.append({"params": list(params), "lr": lr, "name": role})
    if not any(g["params"] for g in groups):
        raise ConfigError(f"model '{config.model}' has no trainable parameters; check model_options")
    fused = {"fused": True} if fusable([p for g in groups for p in g["params"]]) else {}
    if opt.name == "adam":
        return DenseAdam(groups, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, **fused)
    return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, **fused)


class DenseAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose fused kernel is handed channels-last tensors as the dense arrays they are.

    The fused CPU kernel makes its tensors contiguous (in the default sense) first, which for a channels-last
    weight is a weight-sized clone every step (``aten::clone < aten::contiguous < aten::_fused_adam_``); on rd
    (ResNet18, bf16, 256 px, batch 8) those were 95 of the step's 228 ms of copies over 6 steps, the largest
    source. Adam is elementwise, so a channels-last tensor seen as ``permute(*NHWC)`` (a contiguous view of the
    same memory) gets the same update in place, as long as a parameter's weight, gradient and moments are all
    seen the same way. The state, ``state_dict`` and checkpoints are Adam's; only what the kernel is given differs.
    """

    def _init_group(self, group: dict[str, Any], params: list, grads: list, *state: list) -> Any:  # type: ignore[override]
        has_complex = super()._init_group(group, params, grads, *state)
        if group["fused"]:
            exp_avgs, exp_avg_sqs, max_exp_avg_sqs, _steps = state
            lists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if max_exp_avg_sqs else [])
            for i in range(len(params)):
                if all(channels_last_only(seq[i]) for seq in lists):
                    for seq in lists:
                        seq[i] = seq[i].permute(*NHWC)
        return has_complex


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether the fused optimiser kernels apply: float parameters on the CPU or one CUDA device.

    One kernel over all parameters instead of a handful of ops per tensor (benchmarks/train_profile.py times the
    optimiser step; no result of it is committed).
    """
    devices = {p.device.type for p in params}
    one_device = len(devices) == 1 and devices <= {"cpu", "cuda"}
    return one_device and all(p.is_floating_point() for p in params)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return None


def build_pretrain_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the autoencoder alone at its schedule's ``pretrain_lr``, for stfpm-ae's pretraining phase."""
    ae = autoencoder_training(model)
    if ae is None:
        raise ConfigError(f"model '{config.model}' has no autoencoder to pretrain")
    params = list(model.param_groups()["autoencoder"])
    fused = {"fused": True} if fusable(params) else {}
    return DenseAdam(params, lr=ae.ae_schedule.pretrain_lr, **fused)
