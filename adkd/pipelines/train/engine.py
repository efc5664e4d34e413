"""Train and evaluate one model on one category (no Ray, no MLflow).

Progress and artifacts go out through ``TrainCallback``s. Runs are repeatable on CPU: the data
order of an epoch depends only on (seed, epoch), validation runs on a forked RNG, and the
per-epoch checkpoint holds model, optimiser, scheduler and RNG state, so a resumed run ends
bit-identical to an uninterrupted one.

Data-parallel: when ``torch.distributed`` is initialised with several ranks (Ray Train's
``TorchTrainer``, ``torchrun``), every rank calls ``train_category`` with the same config; the
ranks train on disjoint shards with averaged gradients and rank 0 alone validates, evaluates and
writes files (see ``adkd.pipelines.train.distributed``). ``batch_size`` is per rank.

The parts: ``runtime`` (seeds, epoch order), ``adkd.pipelines.inference`` (device, precision, scoring),
``steps`` (one step, the held-out loss, optimisers), ``loop_state`` (what ``last.pt`` holds, resume checks),
``outputs`` (the exported models, and the thresholds and test metrics scored through them); this module runs
them in order.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adkd.errors import ConfigError
from adkd.models.stfpm_ae import AutoencoderTraining, autoencoder_training
from adkd.pipelines.train import checkpoint as ckpt
from adkd.pipelines.train.callbacks import TrainCallback, TrainResult, emit, reported_run
from adkd.pipelines.train.config import TrainConfig, check_model_settings, check_teacher_weights
from adkd.pipelines.train.distributed import DistContext, fingerprint, rank_seed, synced_state
from adkd.pipelines.train.feature_cache import plan_cache, plan_val_cache
from adkd.pipelines.train.loop_state import LoopState, Optimisers, check_resume_path, restore, train_state
from adkd.pipelines.train.memory import peak_memory
from adkd.pipelines.train.positions import sequential_trainer, train_per_position
from adkd.pipelines.train.run_setup import data_gate, run_dir_for, run_meta
from adkd.pipelines.train.runtime import Runtime, batches, epoch_order, rng_state, seed_everything
from adkd.pipelines.train.steps import (
    build_optimizer,
    build_pretrain_optimizer,
    build_scheduler,
    held_out_loss,
    train_step,
)
from adkd.pipelines.train.tiled import cache_allowed, eval_model, limit_epoch, training_sources

log = logging.getLogger(__name__)

# Checked by adkd.platform.cluster.resources before it gives one category several Ray Train workers.
SUPPORTS_DISTRIBUTED = True


def train_category(
    config: TrainConfig, callbacks: Sequence[TrainCallback] = (), *, resume_from: Path | None = None
) -> TrainResult:
    """Train, pick thresholds on held-out normal images, evaluate on the test split, write the outputs.

    User errors (AdkdError) are reported to the callbacks as a FAILED result and re-raised;
    any other failure returns a FAILED result with the error (traceback in ``error.txt``).
    ``resume_from``: a ``last.pt`` to continue from (a ConfigError when it does not exist). A finished
    run ends with ``model.pt`` and, unless ``export_onnx`` is off, ``model.onnx`` beside it.

    Under an initialised process group of several ranks every rank calls this with the same config
    (each may have its own ``out_dir``); every rank gets the lifecycle events (``on_start``,
    ``on_epoch_end`` with the metrics averaged over ranks, ``on_end``), only rank 0 writes files and
    gets ``on_checkpoint``/``on_artifact``, and only rank 0's result carries checkpoint and metrics.
    Ranks other than 0 return as soon as training ends: they do not wait for rank 0's evaluation.
    """
    if config.tiling.splits_positions:  # one job per tile position
        return train_per_position(config, callbacks, sequential_trainer(train_category, callbacks))
    dist = DistContext.detect()
    return reported_run(
        config,
        run_dir_for(config),
        callbacks,
        lambda result: _Run(config, callbacks, result, resume_from, dist).run(),
        main=dist.is_main,
        rank=dist.rank,
    )


class _Run:
    """One training run's moving parts; ``run()`` does the whole job."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[TrainCallback],
        result: TrainResult,
        resume_from: Path | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.config = config
        self.callbacks = callbacks
        self.result = result
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.dist = dist or DistContext()
        self.run_dir = result.run_dir
        self.state = LoopState()
        self.rng_restored = False  # this rank's own RNG state came from the checkpoint
        self.cache = None  # teacher features, see feature_cache
        self.val_cache = None  # the validation images' teacher features, for the held-out loss
        self.ae: AutoencoderTraining | None = None

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
            for cache in (self.cache, self.val_cache):
                if cache is not None:
                    cache.close()
        train_s = time.perf_counter() - t0
        self._finish(train_s, images_seen)

    def _setup(self) -> None:
        """Data, model, optimisers and resumed state; no collectives (see DistContext.agreement)."""
        cfg, main = self.config, self.dist.is_main
        if self.resume_from is not None:
            check_resume_path(self.resume_from)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        check_model_settings(cfg)  # before any data, weights or epoch
        check_teacher_weights(cfg)  # before the data gate
        from adkd.pipelines.data.dataset import load_category, local_root

        root = local_root(cfg.data)
        if main:
            from adkd.pipelines.data.fingerprint import data_fingerprint

            self.result.data_fingerprint = data_fingerprint(root, cfg.category)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "error.txt").unlink(missing_ok=True)  # left by an earlier failed attempt
            self.result.data_validation = data_gate(cfg, root, self.run_dir, self.callbacks, self.result.notes)

        from adkd.models.zoo import build_model

        cfg = self.config = cfg.resolved()  # stored so: a later change of a default alters no run
        self.result.config = cfg.model_dump(mode="json")
        if main:
            (self.run_dir / "config.json").write_text(json.dumps(self.result.config, indent=2) + "\n")
            emit(self.callbacks, "on_artifact", self.run_dir / "config.json", "config")

        seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights
        self.data = load_category(
            root, cfg.category, image_size=cfg.data_size, crop_size=cfg.crop_size,
            val_fraction=cfg.val_fraction, seed=cfg.seed, resize=cfg.resize, image_level=cfg.data_gate.image_level,
        )  # fmt: skip
        if len(self.data.train) < 2:
            raise ConfigError(f"category '{cfg.category}' in {root} has {len(self.data.train)} training images")
        if cfg.export_int8:  # refused now, not after the last epoch
            from adkd.pipelines.export.int8_gate import require_validation_images

            require_validation_images(len(self.data.val))
        if len(self.data.train) // self.dist.world_size < 2:
            raise ConfigError(
                f"category '{cfg.category}' has {len(self.data.train)} training images: too few for "
                f"{self.dist.world_size} data-parallel workers (each needs at least 2); use fewer workers"
            )
        self.rt = Runtime.from_config(cfg)
        self.result.notes.append(self.rt.describe())
        model = build_model(cfg.model, backbone=cfg.backbone, weights=cfg.weights, **cfg.model_options)
        self.model = self.rt.place(model)
        # The training steps' forward through torch.compile (compiled at the first step, in epoch 1's time); the
        # held-out loss, scoring and export use the module itself. The same weights either way.
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        if cfg.compile:
            self.result.notes.append("training steps through torch.compile (compiled in epoch 1; setting compile)")
        self.ae = autoencoder_training(self.model)  # stfpm-ae's autoencoder phases; None for the other models
        # Training data lives on the device once (uint8): no loader workers, no per-batch copies. Tiled, the
        # loop indexes tiles cut from it on demand (adkd.pipelines.train.tiled).
        self.train_images, self.val_images = training_sources(cfg, self.data, self.rt.device, self.result.notes)
        if cache_allowed(cfg, self.train_images, self.result.notes):
            self.cache = plan_cache(
                cfg, self.model, self.train_images, self.rt, self.run_dir, self.result.notes, self.val_images
            )
            self.val_cache = plan_val_cache(cfg, self.cache, self.val_images, self.run_dir, self.result.notes)

        self.opts = Optimisers(
            optimizer=build_optimizer(self.model, cfg),
            pretrain=build_pretrain_optimizer(self.model, cfg) if self._pretrain_epochs() else None,
        )
        self.opts.scheduler = build_scheduler(self.opts.optimizer, cfg)
        if self.resume_from is not None:
            self.state, self.rng_restored, notes = restore(self.resume_from, cfg, self.model, self.opts, self.dist)
            self.result.notes.extend(notes)

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

    # -- checkpoints
    def _save_last(self, phase: str) -> None:
        rng = rng_state()
        rng_by_rank = self.dist.gather(rng) if self.dist.enabled else None

        def write() -> Path:
            ts = train_state(phase, self.opts, self.state, rng, rng_by_rank)
            state = ckpt.checkpoint_dict(self.model, self.config, self._meta(), train_state=ts)
            return ckpt.save_checkpoint(self.run_dir / ckpt.LAST, state)

        path = self.dist.on_main(write)  # every rank waits until last.pt is complete
        if self.dist.is_main:
            self.result.checkpoint_path = path
        self._main_emit("on_checkpoint", path, self._global_epoch())

    def _meta(self, **extra: Any) -> dict[str, Any]:
        st = self.state
        return run_meta(
            self.config, self.data.train, epochs_run=st.epoch, pretrain_epochs_run=st.pretrain_epoch, **extra
        )

    def _global_epoch(self) -> int:
        return self.state.pretrain_epoch + self.state.epoch

    # -- phases
    def epoch_indices(self, epoch_seed_index: int) -> torch.Tensor:
        """The training images this rank sees in an epoch, in order."""
        n, seed = len(self.train_images), self.config.seed
        if self.dist.enabled:
            order = self.dist.shard(n, seed, epoch_seed_index)
        else:
            order = epoch_order(n, seed, epoch_seed_index)
        return limit_epoch(order, self.config, self.dist.world_size)  # tiled: a seeded subset when many

    def _epoch(self, epoch_seed_index: int, optimizer: torch.optim.Optimizer, pretrain: bool) -> tuple[float, int]:
        """Train one epoch; return the mean loss over all ranks' images and how many images all ranks saw."""
        cfg, rt, model = self.config, self.rt, self.model
        model.train()
        total = torch.zeros((), device=rt.device)
        seen = 0
        # The epoch's order on the device in one copy: indexing the images (and the cache) there makes no step
        # wait for the GPU (a host-to-device copy of each batch's indices would).
        order = self.epoch_indices(epoch_seed_index).to(rt.device)
        for idx in batches(order, cfg.batch_size):
            x = rt.prepare(self.train_images[idx])
            teacher = self.cache.batch(idx) if self.cache is not None else None
            try:
                loss = train_step(
                    self.step_model, optimizer, x, rt, pretrain=pretrain, grad_clip_norm=cfg.grad_clip_norm,
                    dist=self.dist, teacher=teacher,
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
        mean = float(total) / max(seen, 1)  # the epoch's one host sync (CUDA steps do not check their loss)
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"loss is {mean} at epoch {self._global_epoch() + 1}; lower the learning rate or set grad_clip_norm"
            )
        return mean, seen * self.dist.world_size

    def _held_out_loss(self, pretrain: bool = False) -> float | None:
        cfg = self.config
        return self.dist.on_main(
            lambda: held_out_loss(
                self.model, self.val_images, self.rt, cfg.eval_batch_size, cfg.seed, pretrain, teacher=self.val_cache
            )
        )

    def _pretrain_epochs(self) -> int:
        return self.ae.ae_schedule.pretrain_epochs if self.ae is not None else 0

    def _pretrain(self) -> int:
        seen_total, epochs = 0, self._pretrain_epochs()
        if not epochs:
            return 0
        self.ae.freeze_autoencoder(False)
        while self.state.pretrain_epoch < epochs:
            t0 = time.perf_counter()
            # Offset keeps pretraining orders distinct from joint-phase orders.
            loss, seen = self._epoch(10_000 + self.state.pretrain_epoch, self.opts.pretrain, pretrain=True)
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
        cfg, seen_total, optimizer = self.config, 0, self.opts.optimizer
        while self.state.epoch < cfg.epochs and not self.state.stopped_early:
            t0 = time.perf_counter()
            if self.ae is not None:
                self.ae.freeze_autoencoder(self.state.epoch < self.ae.ae_schedule.freeze_epochs)
            loss, seen = self._epoch(self.state.epoch, optimizer, pretrain=False)
            train_s = time.perf_counter() - t0  # the training steps alone, as anomalib's epoch clock
            seen_total += seen
            if self.opts.scheduler is not None:
                self.opts.scheduler.step()
            val = self._held_out_loss()
            self.state.epoch += 1
            metrics = {
                "train/loss": loss,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_time_s": time.perf_counter() - t0,
                "train/images_per_s": seen / max(train_s, 1e-9),
                **peak_memory(self.rt.device),  # so far in this process: per epoch, the run's peak
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
            scorer = eval_model(self.model, self.config)  # tiled: whole images, stitched maps
            for cb in self.callbacks:
                extra.update(cb.on_epoch_model(self._global_epoch(), scorer, self.rt, self.data, self.config))
            return extra

        return self.dist.on_main(compute)

    def _track_best(self, val: float) -> None:
        cfg, st = self.config, self.state
        if st.best_val_loss is None or val < st.best_val_loss:
            st.best_val_loss, st.best_epoch, st.bad_epochs = val, st.epoch, 0
            if cfg.keep == "best_val_loss":
                state = ckpt.checkpoint_dict(self.model, cfg, self._meta(best_epoch=st.epoch, best_val_loss=val))
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
        from adkd.pipelines.train.outputs import RunOutputs, finish_run, publish, summary_metrics

        cfg, st, result = self.config, self.state, self.result
        result.epochs_run = st.epoch
        summary = summary_metrics(st, train_s, images_seen) | peak_memory(self.rt.device)
        if not self.dist.is_main:
            # No barrier: the test-split evaluation can outlast the process group's timeout. The caller
            # waits for rank 0 if it needs to (Ray Train's final report does).
            result.notes.append(
                f"rank {self.dist.rank} of {self.dist.world_size}: rank 0 evaluates and writes the outputs"
            )
            return
        if cfg.keep == "best_val_loss" and (self.run_dir / ckpt.BEST).is_file():
            best = ckpt.read_checkpoint(self.run_dir / ckpt.BEST)
            self.model.load_state_dict(best["model_state"])
            result.notes.append(f"kept the epoch-{st.best_epoch} model (lowest validation loss)")

        if cfg.tiling.position is not None:  # one position of a per-position model: train.tiled assembles it
            path = ckpt.save_checkpoint(self.run_dir / ckpt.MODEL, ckpt.checkpoint_dict(self.model, cfg, self._meta()))
            result.checkpoint_path, result.metrics = path, summary
            return
        scorer = eval_model(self.model, cfg)  # whole images: tiled, the stitched full-resolution maps

        def save(out: RunOutputs) -> Path:  # before the export too: a failed export keeps the trained model
            meta = self._meta(
                thresholds=out.thresholds.to_dict(),
                threshold_source=out.source,
                normal_scores={"source": out.source, "quantile": cfg.threshold_quantile, "scores": out.normal_scores},
                metrics=out.metrics,
                data_validation=result.data_validation,
                best_epoch=st.best_epoch,
                history=st.history,
            )
            return ckpt.save_checkpoint(self.run_dir / ckpt.MODEL, ckpt.checkpoint_dict(self.model, cfg, meta))

        # Exported, then thresholds and test metrics from the exported file's scores (train.outputs); tuning
        # trials (evaluate_test off) never look at the test split.
        out = finish_run(scorer, self.data, self.rt, cfg, self.run_dir, result.notes, summary, save)
        result.thresholds, result.metrics = out.thresholds.to_dict(), out.metrics
        path = save(out)
        result.checkpoint_path = path
        emit(self.callbacks, "on_checkpoint", path, self._global_epoch())
        emit(self.callbacks, "on_artifact", path, "model")
        (self.run_dir / "history.json").write_text(json.dumps(st.history, indent=2) + "\n")
        publish(out, result, self.callbacks)
