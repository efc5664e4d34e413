"""The model defaults of earlier releases, for checkpoints that stored only the options a run set.

Checkpoint format 1 (every release before format 2) kept ``model_options`` as the run's overrides;
rebuilding one needs the defaults of the release that wrote it. They changed once for the models'
weights and behaviour, at commit 1345e72 (mrkd: §3.3 fusion conv, the SCConv paper's per-channel fuse,
the §3.8 loss; stfpm-ae: three U-Net stages), so there are two sets, newest first. The format-1
loader (``adkd.pipelines.train.checkpoint``) takes the newest set whose model has exactly the
checkpoint's weights. These tables are history: never edit a value, add a set instead.

Before 1345e72 the bottleneck fused all three levels whatever ``levels`` said, so a checkpoint of
that time with ``levels`` other than 1, 2, 3 has no counterpart today and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PastDefaults:
    """The defaults of every model in a range of releases."""

    releases: str
    models: dict[str, dict[str, Any]]


_RD = {"levels": (1, 2, 3), "loss_mode": "flatten", "bottleneck_width": None, "sigma": 4.0}
_MRKD_COMMON = {**_RD, "use_scconv": True, "use_simam": True, "use_fmm": True, "alpha": 1.0, "mask_rate": 0.5}
_MRKD_COMMON["map_source"] = None  # "generated" with FMM, "student" without
_STFPM = {"sigma": 4.0, "loss_scale": 0.5}
# The stfpm-ae training phases were TrainConfig settings then, written into every config; these are
# their defaults for a config that lacks them.
_AE_PHASES = {"ae_pretrain_epochs": 0, "ae_pretrain_lr": 1e-3, "ae_lr": None, "ae_freeze_epochs": 0}

FORMAT1_DEFAULTS: tuple[PastDefaults, ...] = (
    PastDefaults(
        "1345e72 (2026-11-30) up to format 2",
        {
            "rd": _RD,
            "mrkd": {**_MRKD_COMMON, "loss": "paper", "fusion_conv": True, "scconv_fusion": "per_channel"},
            "stfpm": _STFPM,
            "stfpm-ae": {"alpha": 1e-7, "image_size": 256, "ae_stages": 3, **_STFPM, **_AE_PHASES},
        },
    ),
    PastDefaults(
        "f5ad233 (2026-11-23) to before 1345e72",
        {
            "rd": _RD,
            # Before the options existed: the two-term loss, no 1x1 fusion, SCConv's all-channel softmax.
            "mrkd": {**_MRKD_COMMON, "loss": "two_term", "fusion_conv": False, "scconv_fusion": "softmax_all_channels"},
            "stfpm": _STFPM,  # the loss was ½‖t̂ − ŝ‖², today's loss_scale 0.5
            "stfpm-ae": {"alpha": 1e-7, "image_size": 256, "ae_stages": 2, **_STFPM, **_AE_PHASES},
        },
    ),
)
