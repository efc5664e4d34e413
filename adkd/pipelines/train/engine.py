"""Train and evaluate one model on one category (no Ray, no MLflow).

Progress and artifacts go out through ``TrainCallback``s. Runs are repeatable on CPU: the data
order of an epoch depends only on (seed, epoch), validation runs on a forked RNG, and the
per-epoch checkpoint holds model, optimiser, scheduler and RNG state, so a resumed run ends
bit-identical to an uninterrupted one.

Data-parallel: when ``torch.distributed`` is initialised with several ranks (Ray Train's
``TorchTrainer``, ``torchrun``), every rank calls ``train_category`` with the same config; the
ranks train on disjoint shards with averaged gradients and rank 0 alone validates, evaluates and
writes files (see ``adkd.pipelines.train.distributed``). ``batch_size`` is per rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.train import checkpoint as ckpt
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig, check_model_settings
from adkd.pipelines.train.distributed import DistContext, fingerprint, rank_seed, synced_state
from adkd.pipelines.train.feature_cache import plan_cache

log = logging.getLogger(__name__)

# Checked by adkd.platform.cluster before it gives one category several Ray Train workers.
SUPPORTS_DISTRIBUTED = True

# Settings that may differ between a run and its resumption without changing what is computed.
_RESUME_FREE = {
    "epochs", "out_dir", "num_threads", "skip_validation", "data_gate", "eval_batch_size", "early_stopping",
    "teacher_cache", "teacher_cache_max_gb", "export_int8",
}  # fmt: skip


# --------------------------------------------------------------------------- helpers


def emit(callbacks: Sequence[TrainCallback], event: str, *args: Any) -> None:
    """Call ``event`` on every callback, in order."""
    for cb in callbacks:
        getattr(cb, event)(*args)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use --set device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in an epoch: a function of (seed, epoch) only."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Index batches; a trailing batch of one image is dropped (BatchNorm cannot train on it)."""
    n = len(order)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) == 1 and n > 1:
            return
        yield idx


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class Runtime:
    """How tensors are placed and computed for a run."""

    device: torch.device
    amp: bool
    channels_last: bool

    @classmethod
    def from_config(cls, config: TrainConfig) -> Runtime:
        device = resolve_device(config.device)
        on_gpu = device.type == "cuda"
        amp = on_gpu if config.amp is None else config.amp
        channels_last = on_gpu if config.channels_last is None else config.channels_last
        return cls(device=device, amp=amp, channels_last=channels_last)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] → normalised float on the device (channels_last when asked)."""
        from adkd.models.preprocess import normalize

        x = normalize(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def place(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


# --------------------------------------------------------------------------- one step


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
    FloatingPointError before the step (on every rank alike). ``teacher``: cached teacher features.
    """
    dist = dist or DistContext()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    cached = {} if teacher is None else {"teacher": teacher}
    with _autocast(runtime.device, runtime.amp):
        loss = model.pretrain_loss(images, **cached) if pretrain else model.loss(model(images, **cached))
    optimizer.zero_grad(set_to_none=True)
    if dist.enabled:
        loss.backward()
        loss = dist.average_gradients(params, loss)
        _check_finite(loss)
    else:
        _check_finite(loss)
        loss.backward()
    if grad_clip_norm:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip_norm)
    optimizer.step()
    return loss.detach()


# --------------------------------------------------------------------------- inference


def predict(
    model: nn.Module, images: torch.Tensor, runtime: Runtime, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps [N,1,H,W] and image scores [N] (float32, CPU) for uint8 images [N,3,H,W]."""
    model.eval()
    maps, scores = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = runtime.prepare(images[start : start + batch_size])
            with _autocast(runtime.device, runtime.amp):
                amap, score = model(x)
            maps.append(amap.float().cpu())
            scores.append(score.float().cpu())
    if not maps:
        return torch.zeros(0, 1, *images.shape[-2:]), torch.zeros(0)
    return torch.cat(maps), torch.cat(scores)


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
    model: nn.Module, images: torch.Tensor, runtime: Runtime, batch_size: int, seed: int, pretrain: bool = False
) -> float | None:
    """Mean loss over ``images`` without touching BatchNorm statistics or the training RNG stream."""
    if len(images) == 0:
        return None
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=devices), loss_mode(model), torch.no_grad():
        torch.manual_seed(seed)  # the same masks every epoch: comparable numbers
        for start in range(0, len(images), batch_size):
            x = runtime.prepare(images[start : start + batch_size])
            with _autocast(runtime.device, runtime.amp):
                loss = model.pretrain_loss(x) if pretrain else model.loss(model(x))
            total += float(loss) * len(x)
            count += len(x)
    return total / count


# --------------------------------------------------------------------------- training state


@dataclass
class LoopState:
    """What a resumed run needs besides the weights."""

    pretrain_epoch: int = 0
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "pretrain_epoch": self.pretrain_epoch,
            "epoch": self.epoch,
            "history": self.history,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The joint-phase optimiser over ``param_groups()``; the autoencoder gets ``ae_lr``."""
    opt = config.optimizer
    groups = []
    for role, params in model.param_groups().items():
        lr = (config.ae_lr or opt.lr) if role == "autoencoder" else opt.lr
        groups.append({"params": list(params), "lr": lr, "name": role})
    if not any(g["params"] for g in groups):
        raise ConfigError(f"model '{config.model}' has no trainable parameters; check model_options")
    if opt.name == "adam":
        return torch.optim.Adam(groups, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return None


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = config.model_dump(mode="json")
    diffs = sorted(k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k])
    if diffs:
        raise ConfigError(
            f"cannot resume from {path}: settings changed ({', '.join(diffs)}); "
            "use the original settings or a new --out folder"
        )


# --------------------------------------------------------------------------- the run


def _local_root(data: str) -> Path:
    if data.startswith("s3://"):
        raise ConfigError(
            f"data {data}: the engine reads local folders; sync it first (`adkd train` does this for s3:// URIs)"
        )
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data root {root} does not exist; pass the folder that holds the category folders")
    return root


def resolve_model_settings(config: TrainConfig, spec: Any) -> TrainConfig:
    """Fill in the model's default backbone and, for models sized by it, the input size."""
    update: dict[str, Any] = {}
    if config.backbone is None:
        update["backbone"] = spec.default_backbone
    if "image_size" in spec.defaults and "image_size" not in config.model_options:
        update["model_options"] = {**config.model_options, "image_size": config.eval_size}
    return config.model_copy(update=update) if update else config


def run_dir_for(config: TrainConfig) -> Path:
    """Where a run writes: ``<out_dir>/<model>/<category>`` (stable, so --resume finds it)."""
    return Path(config.out_dir) / config.model / config.category


def train_category(
    config: TrainConfig, callbacks: Sequence[TrainCallback] = (), *, resume: bool = False
) -> TrainResult:
    """Train, pick thresholds on held-out normal images, evaluate on the test split, write the outputs.

    User errors (AdkdError) are reported to the callbacks as a FAILED result and re-raised;
    any other failure returns a FAILED result with the error (traceback in ``error.txt``).
    ``resume=True`` continues from ``last.pt`` in the run folder when there is one.

    Under an initialised process group of several ranks every rank calls this with the same config
    (each may have its own ``out_dir``); every rank gets the lifecycle events (``on_start``,
    ``on_epoch_end`` with the metrics averaged over ranks, ``on_end``), only rank 0 writes files and
    gets ``on_checkpoint``/``on_artifact``, and only rank 0's result carries checkpoint and metrics.
    Ranks other than 0 return as soon as training ends: they do not wait for rank 0's evaluation.
    """
    started = time.perf_counter()
    dist = DistContext.detect()
    run_dir = run_dir_for(config)
    result = TrainResult(
        category=config.category,
        model=config.model,
        status="RUNNING",
        run_dir=run_dir,
        config=config.model_dump(mode="json"),
    )
    emit(callbacks, "on_start", result.config)
    try:
        _Run(config, callbacks, result, resume, dist).run()
        result.status = "FINISHED"
    except AdkdError as exc:
        result.status, result.error = "FAILED", str(exc)
        result.duration_s = time.perf_counter() - started
        emit(callbacks, "on_end", result)
        raise
    except Exception as exc:
        result.status, result.error = "FAILED", f"{type(exc).__name__}: {exc}"
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(traceback.format_exc())
        log.exception("training %s/%s failed (rank %d)", config.model, config.category, dist.rank)
    result.duration_s = time.perf_counter() - started
    emit(callbacks, "on_end", result)
    return result


class _Run:
    """One training run's moving parts; ``run()`` does the whole job."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[TrainCallback],
        result: TrainResult,
        resume: bool,
        dist: DistContext | None = None,
    ) -> None:
        self.config = config
        self.callbacks = callbacks
        self.result = result
        self.resume = resume
        self.dist = dist or DistContext()
        self.run_dir = result.run_dir
        self.state = LoopState()
        self.rng_restored = False  # this rank's own RNG state came from the checkpoint
        self.cache = None  # teacher features, see feature_cache

    def _main_emit(self, event: str, *args: Any) -> None:
        """File events (checkpoint, artifact) go out on rank 0 only: the other ranks write nothing."""
        if self.dist.is_main:
            emit(self.callbacks, event, *args)

    # -- setup
    def run(self) -> None:
        with self.dist.agreement():  # a setup error on any rank ends every rank, with that error
            self._setup()
        if self.dist.enabled:
            self._sync_ranks()

        t0 = time.perf_counter()
        try:
            images_seen = self._pretrain() + self._train()
        finally:
            if self.cache is not None:
                self.cache.close()
        train_s = time.perf_counter() - t0
        self._finish(train_s, images_seen)

    def _setup(self) -> None:
        """Data, model, optimisers and resumed state; no collectives (see DistContext.agreement)."""
        cfg, main = self.config, self.dist.is_main
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        check_model_settings(cfg)  # before any data, weights or epoch
        root = _local_root(cfg.data)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "error.txt").unlink(missing_ok=True)  # left by an earlier failed attempt
            self._data_gate(root)

        from adkd.models.registry import MODEL_REGISTRY, build_model
        from adkd.pipelines.data.dataset import load_category

        if cfg.model not in MODEL_REGISTRY:
            raise ConfigError(f"unknown model '{cfg.model}'; choose one of {', '.join(MODEL_REGISTRY)}")
        cfg = self.config = resolve_model_settings(cfg, MODEL_REGISTRY[cfg.model])
        self.result.config = cfg.model_dump(mode="json")
        if main:
            (self.run_dir / "config.json").write_text(json.dumps(self.result.config, indent=2) + "\n")
            emit(self.callbacks, "on_artifact", self.run_dir / "config.json", "config")

        seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights
        self.data = load_category(
            root, cfg.category, image_size=cfg.image_size, crop_size=cfg.crop_size,
            val_fraction=cfg.val_fraction, seed=cfg.seed, resize=cfg.resize, image_level=cfg.data_gate.image_level,
        )  # fmt: skip
        if len(self.data.train) < 2:
            raise ConfigError(f"category '{cfg.category}' in {root} has {len(self.data.train)} training images")
        if len(self.data.train) // self.dist.world_size < 2:
            raise ConfigError(
                f"category '{cfg.category}' has {len(self.data.train)} training images: too few for "
                f"{self.dist.world_size} data-parallel workers (each needs at least 2); use fewer workers"
            )
        self.rt = Runtime.from_config(cfg)
        model = build_model(cfg.model, backbone=cfg.backbone, weights=cfg.weights, **cfg.model_options)
        self.model = self.rt.place(model)
        if cfg.ae_pretrain_epochs and not hasattr(self.model, "pretrain_loss"):
            raise ConfigError(f"ae_pretrain_epochs is for stfpm-ae; model '{cfg.model}' has no autoencoder")
        # Training data lives on the device once (uint8): no loader workers, no per-batch copies.
        self.train_images = self.data.train.to(self.rt.device)
        self.val_images = self.data.val
        self.cache = plan_cache(cfg, self.model, self.train_images, self.rt, self.run_dir, self.result.notes)

        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.pre_optimizer = self._pretrain_optimizer() if cfg.ae_pretrain_epochs else None
        self._maybe_resume()

    def _sync_ranks(self) -> None:
        """Same loop position and weights on every rank, then a random stream of each rank's own."""
        d = self.dist
        positions = d.gather((self.state.pretrain_epoch, self.state.epoch))
        if len(set(positions)) > 1:
            raise RuntimeError(
                f"ranks resumed at different epochs {positions} (pretraining, training): every rank must "
                "load the same last.pt"
            )
        params, self.synced_buffers = synced_state(self.model)
        d.broadcast_(params + self.synced_buffers)
        prints = d.gather(fingerprint(self.model))
        if any(p != prints[0] for p in prints):
            raise RuntimeError(
                "the frozen teacher differs between ranks after the trained weights were broadcast; "
                "check that every node has the same teacher weights"
            )
        if not self.rng_restored:
            seed_everything(rank_seed(self.config.seed, d.rank))

    def _data_gate(self, root: Path) -> None:
        if self.config.skip_validation:
            self.result.data_validation = "skipped"
            self.result.notes.append("data validation skipped (skip_validation=true)")
            return
        from adkd.pipelines.data.validate import require_valid

        # No GX Data Docs site here (~4 MB and seconds of rendering per run); the GX result JSON, fact tables
        # and report.html are kept. `adkd data validate --out DIR` renders the full Data Docs.
        report = require_valid(
            root,
            categories=[self.config.category],
            out_dir=self.run_dir / "data_validation",
            data_docs=False,
            **self.config.data_gate.validate_kwargs(),
        )
        self.result.data_validation = "passed"
        if report is not None and hasattr(report, "to_dict"):
            path = self.run_dir / "data_validation.json"
            path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
            emit(self.callbacks, "on_artifact", path, "data_validation")

    def _pretrain_optimizer(self) -> torch.optim.Optimizer:
        params = self.model.param_groups().get("autoencoder", [])
        return torch.optim.Adam(params, lr=self.config.ae_pretrain_lr)

    def _maybe_resume(self) -> None:
        path = self.run_dir / ckpt.LAST
        if not self.resume:
            return
        if not path.is_file():
            self.result.notes.append(f"resume asked but {path} does not exist: started from scratch")
            return
        saved = ckpt.read_checkpoint(path)
        _check_resumable(saved["config"], self.config, path)
        self.model.load_state_dict(saved["model_state"])
        ts = saved["train_state"]
        self.optimizer.load_state_dict(ts["optimizer"])
        if self.scheduler is not None and ts.get("scheduler") is not None:
            self.scheduler.load_state_dict(ts["scheduler"])
        if self.pre_optimizer is not None and ts.get("pretrain_optimizer") is not None:
            self.pre_optimizer.load_state_dict(ts["pretrain_optimizer"])
        self.state = LoopState.from_dict(ts["loop"])
        # One RNG state per rank when the run was data-parallel; [rank 0's] otherwise.
        states = ts.get("rng_by_rank") or [ts["rng"]]
        set_rng_state(states[self.dist.rank] if len(states) == self.dist.world_size else states[0])
        self.rng_restored = len(states) == self.dist.world_size
        self.result.notes.append(
            f"resumed from {path} after {self.state.pretrain_epoch} pretraining and {self.state.epoch} epochs"
        )
        if not self.rng_restored:
            self.result.notes.append(
                f"last.pt was written by {len(states)} rank(s), this run has {self.dist.world_size}: "
                "random streams start afresh, the run is not bit-identical to an uninterrupted one"
            )

    def _save_last(self, phase: str) -> None:
        rng = rng_state()
        rng_by_rank = self.dist.gather(rng) if self.dist.enabled else None

        def write() -> Path:
            train_state = {
                "phase": phase,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "pretrain_optimizer": self.pre_optimizer.state_dict() if self.pre_optimizer else None,
                "loop": self.state.to_dict(),
                "rng": rng,
            }
            if rng_by_rank is not None:
                train_state["rng_by_rank"] = rng_by_rank
            state = {
                "format": ckpt.FORMAT,
                "model_state": self.model.state_dict(),
                "config": self.config.model_dump(mode="json"),
                "meta": self._meta(),
                "train_state": train_state,
            }
            return ckpt.save_checkpoint(self.run_dir / ckpt.LAST, state)

        path = self.dist.on_main(write)  # every rank waits until last.pt is complete
        if self.dist.is_main:
            self.result.checkpoint_path = path
        self._main_emit("on_checkpoint", path, self._global_epoch())

    def _meta(self, **extra: Any) -> dict[str, Any]:
        cfg = self.config
        meta = {
            "category": cfg.category,
            "model": cfg.model,
            "backbone": cfg.backbone,
            "image_size": cfg.image_size,
            "crop_size": cfg.crop_size,
            "eval_size": cfg.eval_size,
            "resize": cfg.resize,
            "epochs_run": self.state.epoch,
            "pretrain_epochs_run": self.state.pretrain_epoch,
        }
        meta.update(extra)
        return meta

    def _global_epoch(self) -> int:
        return self.state.pretrain_epoch + self.state.epoch

    # -- phases
    def epoch_indices(self, epoch_seed_index: int) -> torch.Tensor:
        """The training images this rank sees in an epoch, in order."""
        n, seed = len(self.train_images), self.config.seed
        if self.dist.enabled:
            return self.dist.shard(n, seed, epoch_seed_index)
        return epoch_order(n, seed, epoch_seed_index)

    def _epoch(self, epoch_seed_index: int, optimizer: torch.optim.Optimizer, pretrain: bool) -> tuple[float, int]:
        """Train one epoch; return the mean loss over all ranks' images and how many images all ranks saw."""
        cfg, rt, model = self.config, self.rt, self.model
        model.train()
        total = torch.zeros((), device=rt.device)
        seen = 0
        for idx in batches(self.epoch_indices(epoch_seed_index), cfg.batch_size):
            x = rt.prepare(self.train_images[idx.to(rt.device)])
            teacher = self.cache.batch(idx) if self.cache is not None else None
            try:
                loss = train_step(
                    model, optimizer, x, rt, pretrain=pretrain, grad_clip_norm=cfg.grad_clip_norm, dist=self.dist,
                    teacher=teacher,
                )  # fmt: skip
            except FloatingPointError as exc:
                raise FloatingPointError(
                    f"{exc} at epoch {self._global_epoch() + 1}; lower the learning rate or set grad_clip_norm"
                ) from None
            # Every rank's batch has the same size, so the mean of rank means is the mean over all images.
            total += loss.float() * len(idx)
            seen += len(idx)
        if self.dist.enabled:
            self.dist.average_(self.synced_buffers)  # BatchNorm statistics: the same model on every rank
        return float(total) / max(seen, 1), seen * self.dist.world_size

    def _held_out_loss(self, pretrain: bool = False) -> float | None:
        cfg = self.config
        return self.dist.on_main(
            lambda: held_out_loss(self.model, self.val_images, self.rt, cfg.eval_batch_size, cfg.seed, pretrain)
        )

    def _pretrain(self) -> int:
        cfg, seen_total = self.config, 0
        if not cfg.ae_pretrain_epochs:
            return 0
        if hasattr(self.model, "freeze_autoencoder"):
            self.model.freeze_autoencoder(False)
        while self.state.pretrain_epoch < cfg.ae_pretrain_epochs:
            t0 = time.perf_counter()
            # Offset keeps pretraining orders distinct from joint-phase orders.
            loss, seen = self._epoch(10_000 + self.state.pretrain_epoch, self.pre_optimizer, pretrain=True)
            seen_total += seen
            val = self._held_out_loss(pretrain=True)
            self.state.pretrain_epoch += 1
            metrics = {"pretrain/loss": loss, "epoch_time_s": time.perf_counter() - t0}
            if val is not None:
                metrics["pretrain/val_loss"] = val
            self.state.history.append({"epoch": self._global_epoch(), **metrics})
            self._save_last("pretrain")
            emit(self.callbacks, "on_epoch_end", self._global_epoch(), metrics)
        return seen_total

    def _train(self) -> int:
        cfg, seen_total = self.config, 0
        while self.state.epoch < cfg.epochs and not self.state.stopped_early:
            t0 = time.perf_counter()
            if hasattr(self.model, "freeze_autoencoder"):
                self.model.freeze_autoencoder(self.state.epoch < cfg.ae_freeze_epochs)
            loss, seen = self._epoch(self.state.epoch, self.optimizer, pretrain=False)
            seen_total += seen
            if self.scheduler is not None:
                self.scheduler.step()
            val = self._held_out_loss()
            self.state.epoch += 1
            metrics = {
                "train/loss": loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_time_s": time.perf_counter() - t0,
                "train/images_per_s": seen / max(time.perf_counter() - t0, 1e-9),
            }
            if val is not None:
                metrics["val/loss"] = val
                self._track_best(val)
            metrics.update(self._epoch_model_metrics())
            self.state.history.append({"epoch": self._global_epoch(), **metrics})
            self._save_last("train")
            emit(self.callbacks, "on_epoch_end", self._global_epoch(), metrics)
        return seen_total

    def _epoch_model_metrics(self) -> dict[str, float]:
        """Extra per-epoch metrics from callbacks that look at the model (``on_epoch_model``, e.g. tuning).

        Data-parallel, rank 0 computes them and every rank reports the same values.
        """

        def compute() -> dict[str, float]:
            extra: dict[str, float] = {}
            for cb in self.callbacks:
                hook = getattr(cb, "on_epoch_model", None)
                if hook is not None:
                    extra.update(hook(self._global_epoch(), self.model, self.rt, self.data, self.config) or {})
            return extra

        return self.dist.on_main(compute)

    def _track_best(self, val: float) -> None:
        cfg, st = self.config, self.state
        if st.best_val_loss is None or val < st.best_val_loss:
            st.best_val_loss, st.best_epoch, st.bad_epochs = val, st.epoch, 0
            if cfg.keep == "best_val_loss":
                state = {
                    "format": ckpt.FORMAT,
                    "model_state": self.model.state_dict(),
                    "config": cfg.model_dump(mode="json"),
                    "meta": self._meta(best_epoch=st.epoch, best_val_loss=val),
                }
                self.dist.on_main(lambda: ckpt.save_checkpoint(self.run_dir / ckpt.BEST, state))
        else:
            st.bad_epochs += 1
            if cfg.early_stopping and st.bad_epochs >= cfg.early_stopping:
                st.stopped_early = True
                self.result.notes.append(
                    f"early stopping after epoch {st.epoch}: no better validation loss for {st.bad_epochs} epochs"
                )

    # -- after training
    def _finish(self, train_s: float, images_seen: int) -> None:
        cfg, st = self.config, self.state
        if not self.dist.is_main:
            # No barrier: the test-split evaluation can outlast the process group's timeout. The caller
            # waits for rank 0 if it needs to (Ray Train's final report does).
            self.result.epochs_run = st.epoch
            self.result.notes.append(
                f"rank {self.dist.rank} of {self.dist.world_size}: rank 0 evaluates and writes the outputs"
            )
            return
        if cfg.keep == "best_val_loss" and (self.run_dir / ckpt.BEST).is_file():
            best = ckpt.read_checkpoint(self.run_dir / ckpt.BEST)
            self.model.load_state_dict(best["model_state"])
            self.result.notes.append(f"kept the epoch-{st.best_epoch} model (lowest validation loss)")
        self.result.epochs_run = st.epoch

        from adkd.pipelines.evaluate.thresholds import fit_thresholds

        if len(self.val_images):
            fit_images, source = self.val_images, "validation"
        else:
            # Every train/good image was trained on (the paper presets): thresholds come from those same
            # images, never from the test split; they sit low because the model has seen them.
            fit_images, source = self.data.train, "train"
            self.result.notes.append(
                f"val_fraction=0: thresholds fitted on the {len(fit_images)} training images at quantile "
                f"{cfg.threshold_quantile} (optimistic: the model was trained on them; never the test split)"
            )
        fit_maps, fit_scores = predict(self.model, fit_images, self.rt, cfg.eval_batch_size)
        thresholds = fit_thresholds(fit_scores, fit_maps, cfg.threshold_quantile)
        self.result.thresholds = thresholds.to_dict()
        source_path = self.run_dir / "thresholds.json"
        source_info = {"source": source, "images": len(fit_images), "quantile": cfg.threshold_quantile}
        source_path.write_text(json.dumps({**thresholds.to_dict(), **source_info}, indent=2) + "\n")

        extra = {"time/train_s": train_s}
        if train_s > 0 and images_seen:
            extra["train/images_per_s"] = images_seen / train_s
        if st.best_val_loss is not None:
            extra["val/best_loss"] = st.best_val_loss
        if st.history:
            last_train = [h["train/loss"] for h in st.history if "train/loss" in h]
            if last_train:
                extra["train/final_loss"] = last_train[-1]
        if cfg.evaluate_test:
            metrics = evaluate_model(
                self.model, self.data, thresholds, cfg, self.run_dir, self.callbacks, self.rt, extra_metrics=extra
            )
        else:  # tuning trials: the test split must not be looked at
            metrics = extra
        self.result.metrics = metrics
        meta = self._meta(
            thresholds=thresholds.to_dict(),
            threshold_source=source,
            metrics=metrics,
            data_validation=self.result.data_validation,
            best_epoch=st.best_epoch,
            history=st.history,
        )
        state = {
            "format": ckpt.FORMAT,
            "model_state": self.model.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "meta": meta,
        }
        path = ckpt.save_checkpoint(self.run_dir / ckpt.MODEL, state)
        self.result.checkpoint_path = path
        emit(self.callbacks, "on_checkpoint", path, self._global_epoch())
        emit(self.callbacks, "on_artifact", path, "model")
        history_path = self.run_dir / "history.json"
        history_path.write_text(json.dumps(st.history, indent=2) + "\n")


# --------------------------------------------------------------------------- evaluation


def evaluate_model(
    model: nn.Module,
    data: Any,
    thresholds: Any,
    config: TrainConfig,
    out_dir: Path,
    callbacks: Sequence[TrainCallback] = (),
    runtime: Runtime | None = None,
    extra_metrics: dict[str, float] | None = None,
) -> dict[str, float]:
    """Score the test split; write metrics.json, scores.csv and the plots; return the metrics."""
    from adkd.pipelines.evaluate.metrics import compute_metrics
    from adkd.pipelines.evaluate.thresholds import normalize_scores

    rt = runtime or Runtime.from_config(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    maps, scores = predict(model, data.test, rt, config.eval_batch_size)
    infer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = data.test_masks if getattr(data, "has_masks", True) else None  # None: image-level, no pixel metrics
    raw = compute_metrics(maps, scores, masks, data.test_labels)
    metric_s = time.perf_counter() - t0
    metrics = {f"test/{k}": float(v) for k, v in raw.items()}
    if len(scores):
        metrics["test/ms_per_image"] = 1000.0 * infer_s / len(scores)
    metrics["time/metrics_s"] = metric_s
    metrics.update(extra_metrics or {})

    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    emit(callbacks, "on_artifact", path, "metrics")

    norm = normalize_scores(scores, thresholds)
    path = out_dir / "scores.csv"
    _write_scores_csv(path, data, scores, norm, thresholds)
    emit(callbacks, "on_artifact", path, "scores")

    for plot_path, kind in _plots(data, maps, scores, thresholds, out_dir):
        emit(callbacks, "on_artifact", plot_path, kind)
    return metrics


def _write_scores_csv(path: Path, data: Any, scores: torch.Tensor, norm: torch.Tensor, thresholds: Any) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "defect", "label", "score", "normalized_score", "predicted_label"])
        for i in range(len(scores)):
            writer.writerow(
                [
                    str(data.test_paths[i]),
                    data.test_defects[i],
                    int(data.test_labels[i]),
                    f"{float(scores[i]):.6g}",
                    f"{float(norm[i]):.6f}",
                    int(float(scores[i]) > thresholds.image),
                ]
            )


def _plots(data: Any, maps: torch.Tensor, scores: torch.Tensor, thresholds: Any, out_dir: Path) -> list:
    """ROC/PRO curves and overlays of the worst and best test images, via evaluate.plots."""
    try:
        from adkd.pipelines.evaluate import plots
    except ImportError:
        log.warning("adkd.pipelines.evaluate.plots is not available: no plots written")
        return []
    paths = plots.write_evaluation_plots(
        data.test,
        maps,
        scores,
        data.test_masks if getattr(data, "has_masks", True) else None,
        data.test_labels,
        out_dir,
        pixel_threshold=thresholds.pixel,
        image_threshold=thresholds.image,
        names=[Path(p).name for p in data.test_paths],
    )
    return [(p, "overlay" if "overlay" in p.name else "curve") for p in paths]


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    category: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    callbacks: Sequence[TrainCallback] = (),
) -> dict[str, float]:
    """Re-evaluate a saved model on a data root with the thresholds stored in it."""
    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.evaluate.thresholds import Thresholds

    model, config, meta = ckpt.load_model_from_checkpoint(checkpoint)
    category = category or config.category
    config = config.model_copy(update={"device": device, "category": category, "data": data})
    root = _local_root(data)
    loaded = load_category(
        root, category, image_size=config.image_size, crop_size=config.crop_size,
        val_fraction=config.val_fraction, seed=config.seed, resize=config.resize,
        image_level=config.data_gate.image_level,
    )  # fmt: skip
    if not meta.get("thresholds"):
        raise ConfigError(f"checkpoint {checkpoint} has no thresholds; use the model.pt written after training")
    thresholds = Thresholds.from_dict(meta["thresholds"])
    rt = Runtime.from_config(config)
    model = rt.place(model)
    target = Path(out_dir) if out_dir else Path(checkpoint).parent / f"evaluate-{category}"
    return evaluate_model(model, loaded, thresholds, config, target, callbacks, rt)
