"""SCConv: spatial and channel reconstruction convolution (Li et al., CVPR 2023).

The paper has no official code. The SRU follows the widely used unofficial version
(cheng-haha/ScConv at cf3b372, 2023-10): the SRU gate is the soft ``where`` gating on
``sigmoid(GN(x) · γ/Σγ)`` at threshold 0.5, multiplying the input ``x``.

The CRU's fuse step follows the paper: a per-channel soft attention over the two branches,
``β1 = e^{s1}/(e^{s1}+e^{s2})``, ``β2 = 1 − β1`` for each channel, with ``s1, s2`` the branches'
global-average-pooled descriptors. The unofficial code instead takes one softmax over all 2C pooled
channels, so every weight is about 1/(2C): the output shrinks ~1000× at C = 288 and any SimAM after it
sees variances below its λ and multiplies by a constant. That variant is kept as
``fusion="softmax_all_channels"`` for anyone matching that code base.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SRU(nn.Module):
    """Spatial reconstruction unit: separate informative from redundant features, cross-reconstruct."""

    def __init__(self, channels: int, group_num: int = 4, gate_threshold: float = 0.5) -> None:
        super().__init__()
        if channels % group_num or channels % 2:
            msg = f"SRU: channels={channels} must be divisible by group_num={group_num} and by 2"
            raise ValueError(msg)
        if not 0.0 < gate_threshold < 1.0:
            msg = f"SRU: gate_threshold={gate_threshold} must be in (0, 1)"
            raise ValueError(msg)
        self.gn = nn.GroupNorm(group_num, channels)
        self.gate_threshold = gate_threshold

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights (w1, w2): above the threshold w1 = 1, w2 = 0; elsewhere both equal the re-weight."""
        w_gamma = (self.gn.weight / self.gn.weight.sum()).view(1, -1, 1, 1)
        logits = self.gn(x) * w_gamma
        reweights = torch.sigmoid(logits)
        # sigmoid(z) > t ⟺ z > logit(t). Deciding on z keeps the hard gate identical across runtimes: with
        # γ/Σγ ≈ 1/C the re-weights all sit within ~1e-3 of 0.5, where sigmoid's last bit (which differs
        # between PyTorch and onnxruntime) would flip some positions between ×1 and ×0.5.
        informative = logits > math.log(self.gate_threshold / (1 - self.gate_threshold))
        w1 = torch.where(informative, torch.ones_like(reweights), reweights)
        w2 = torch.where(informative, torch.zeros_like(reweights), reweights)
        return w1, w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.gate(x)
        x1, x2 = w1 * x, w2 * x
        half = x.shape[1] // 2
        x11, x12 = x1[:, :half], x1[:, half:]
        x21, x22 = x2[:, :half], x2[:, half:]
        return torch.cat([x11 + x22, x12 + x21], dim=1)


CRU_FUSIONS = ("per_channel", "softmax_all_channels")


class CRU(nn.Module):
    """Channel reconstruction unit: split α/(1−α), squeeze, GWC+PWC / PWC+reuse, soft-attention fuse.

    ``fusion="per_channel"`` (the paper): β1 + β2 = 1 per channel over the two branches.
    ``fusion="softmax_all_channels"`` (cheng-haha/ScConv): one softmax over all 2C pooled channels.
    """

    def __init__(
        self,
        channels: int,
        alpha: float = 0.5,
        squeeze_ratio: int = 2,
        group_size: int = 2,
        group_kernel_size: int = 3,
        fusion: str = "per_channel",
    ) -> None:
        super().__init__()
        if fusion not in CRU_FUSIONS:
            msg = f"CRU: fusion={fusion!r}: use one of {', '.join(CRU_FUSIONS)}"
            raise ValueError(msg)
        self.fusion = fusion
        self.up_channels = up = int(alpha * channels)
        self.low_channels = low = channels - up
        up_sq, low_sq = up // squeeze_ratio, low // squeeze_ratio
        if up_sq % group_size or up_sq == 0 or low_sq == 0:
            msg = (
                f"CRU: channels={channels} with alpha={alpha}, squeeze_ratio={squeeze_ratio} gives "
                f"{up_sq} squeezed channels, which must be positive and divisible by group_size={group_size}"
            )
            raise ValueError(msg)
        self.squeeze1 = nn.Conv2d(up, up_sq, 1, bias=False)
        self.squeeze2 = nn.Conv2d(low, low_sq, 1, bias=False)
        self.gwc = nn.Conv2d(up_sq, channels, group_kernel_size, padding=group_kernel_size // 2, groups=group_size)
        self.pwc1 = nn.Conv2d(up_sq, channels, 1, bias=False)
        self.pwc2 = nn.Conv2d(low_sq, channels - low_sq, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, low = x[:, : self.up_channels], x[:, self.up_channels :]
        up, low = self.squeeze1(up), self.squeeze2(low)
        y1 = self.gwc(up) + self.pwc1(up)
        y2 = torch.cat([self.pwc2(low), low], dim=1)
        if self.fusion == "softmax_all_channels":
            out = torch.cat([y1, y2], dim=1)
            out = torch.softmax(out.mean(dim=(2, 3), keepdim=True), dim=1) * out
            c = x.shape[1]
            return out[:, :c] + out[:, c:]
        # A softmax over the two branches per channel is the sigmoid of the descriptors' difference.
        beta1 = torch.sigmoid(y1.mean(dim=(2, 3), keepdim=True) - y2.mean(dim=(2, 3), keepdim=True))
        return beta1 * y1 + (1 - beta1) * y2


class SCConv(nn.Module):
    """SRU then CRU; keeps the shape [B,C,H,W]."""

    def __init__(
        self,
        channels: int,
        group_num: int = 4,
        gate_threshold: float = 0.5,
        alpha: float = 0.5,
        squeeze_ratio: int = 2,
        group_size: int = 2,
        group_kernel_size: int = 3,
        fusion: str = "per_channel",
    ) -> None:
        super().__init__()
        self.sru = SRU(channels, group_num=group_num, gate_threshold=gate_threshold)
        self.cru = CRU(channels, alpha, squeeze_ratio, group_size, group_kernel_size, fusion=fusion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cru(self.sru(x))
