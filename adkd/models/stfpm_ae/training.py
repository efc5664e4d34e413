"""What stfpm-ae asks of the training loop besides a loss: an autoencoder phase schedule.

The engine checks ``isinstance(model, AutoencoderTraining)``: such a model's autoencoder is
pretrained first (``pretrain_loss``, Adam at ``ae_schedule.pretrain_lr``), frozen for the first
joint epochs (``freeze_autoencoder``) and trained at its own learning rate (the parameter group
``"autoencoder"`` of ``param_groups()``). Other models have none of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AutoencoderSchedule:
    """The autoencoder's training phases (the model options ``ae_pretrain_epochs`` … ``ae_freeze_epochs``).

    Args:
        pretrain_epochs: epochs of autoencoder pretraining on teacher features before joint training.
        pretrain_lr: Adam learning rate of the pretraining.
        lr: the autoencoder's learning rate in the joint phase; None = the optimiser's.
        freeze_epochs: first joint epochs in which the autoencoder does not learn.
    """

    pretrain_epochs: int
    pretrain_lr: float
    lr: float | None
    freeze_epochs: int


@runtime_checkable
class AutoencoderTraining(Protocol):
    """A model with an autoencoder that the engine pretrains, freezes and gives its own learning rate."""

    ae_schedule: AutoencoderSchedule

    def pretrain_loss(self, images: torch.Tensor, teacher: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Loss of the pretraining phase (``teacher``: cached teacher features, as for ``forward``)."""
        ...

    def freeze_autoencoder(self, flag: bool = True) -> None:
        """Stop (True) or resume (False) the autoencoder's gradient updates."""
        ...


def autoencoder_training(model: object) -> AutoencoderTraining | None:
    """``model`` as an ``AutoencoderTraining`` when it is one, else None."""
    return model if isinstance(model, AutoencoderTraining) else None
