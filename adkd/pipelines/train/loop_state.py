"""Where a run is in its loop, what of it goes into ``last.pt``, and the checks before resuming from one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.train import checkpoint as ckpt
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.distributed import DistContext
from adkd.pipelines.train.runtime import set_rng_state

# Settings that may differ between a run and its resumption without changing what is computed.
RESUME_FREE = {
    "epochs", "out_dir", "num_threads", "skip_validation", "data_gate", "eval_batch_size", "early_stopping",
    "teacher_cache", "teacher_cache_max_gb", "export_int8", "export_onnx", "int8_runtimes", "time_runtimes", "compile",
}  # fmt: skip


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


@dataclass
class Optimisers:
    """The stateful objects a resumed run restores besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    pretrain: torch.optim.Optimizer | None = None

    def state_dicts(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "pretrain_optimizer": self.pretrain.state_dict() if self.pretrain is not None else None,
        }

    def load(self, train_state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(train_state["optimizer"])
        if self.scheduler is not None and train_state.get("scheduler") is not None:
            self.scheduler.load_state_dict(train_state["scheduler"])
        if self.pretrain is not None and train_state.get("pretrain_optimizer") is not None:
            self.pretrain.load_state_dict(train_state["pretrain_optimizer"])


def train_state(
    phase: str, opts: Optimisers, loop: LoopState, rng: dict[str, Any], rng_by_rank: list[Any] | None
) -> dict[str, Any]:
    """The ``train_state`` entry of ``last.pt``; ``rng_by_rank`` only when the run is data-parallel."""
    state = {"phase": phase, **opts.state_dicts(), "loop": loop.to_dict(), "rng": rng}
    if rng_by_rank is not None:
        state["rng_by_rank"] = rng_by_rank
    return state


def check_resume_path(path: Path) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"resume_from {path} does not exist; pass the last.pt of an earlier run or start afresh")


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse a ``last.pt`` written with settings that change what the run computes."""
    now = config.model_dump(mode="json")
    diffs = sorted(k for k in now if k not in RESUME_FREE and saved.get(k) != now[k])
    if diffs:
        raise ConfigError(
            f"cannot resume from {path}: settings changed ({', '.join(diffs)}); "
            "use the original settings or a new --out folder"
        )


def restore(
    path: Path, config: TrainConfig, model: nn.Module, opts: Optimisers, dist: DistContext
) -> tuple[LoopState, bool, list[str]]:
    """Load ``last.pt`` into the model and optimisers; (loop state, whether this rank's RNG was restored, notes)."""
    saved = ckpt.read_checkpoint(path)
    check_resumable(saved["config"], config, path)
    model.load_state_dict(saved["model_state"])
    ts = saved["train_state"]
    opts.load(ts)
    state = LoopState.from_dict(ts["loop"])
    # One RNG state per rank when the run was data-parallel; [rank 0's] otherwise.
    states = ts.get("rng_by_rank") or [ts["rng"]]
    rng_restored = len(states) == dist.world_size
    set_rng_state(states[dist.rank] if rng_restored else states[0])
    notes = [f"resumed from {path} after {state.pretrain_epoch} pretraining and {state.epoch} epochs"]
    if not rng_restored:
        notes.append(
            f"last.pt was written by {len(states)} rank(s), this run has {dist.world_size}: "
            "random streams start afresh, the run is not bit-identical to an uninterrupted one"
        )
    return state, rng_restored, notes
