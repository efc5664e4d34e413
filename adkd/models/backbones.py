"""Three-level feature extractors (teachers, and STFPM's students) built from torchvision.

Every extractor returns a list of three feature maps, shallow to deep, and exposes
``channels`` and ``strides`` per level:

| backbone          | channels          | strides     | taken after              |
|-------------------|-------------------|-------------|--------------------------|
| resnet18          | 64, 128, 256      | 4, 8, 16    | layer1, layer2, layer3   |
| resnet50          | 256, 512, 1024    | 4, 8, 16    | layer1, layer2, layer3   |
| wide_resnet50_2   | 256, 512, 1024    | 4, 8, 16    | layer1, layer2, layer3   |
| mobilenet_v2      | 24, 32, 96        | 4, 8, 16    | features[3], [6], [13]   |

For MobileNetV2 the levels are the last block of each resolution stage that matches the
ResNet strides: ``features[3]`` ends the 24-channel stride-4 stage, ``features[6]`` the
32-channel stride-8 stage, ``features[13]`` the 96-channel stride-16 stage (``features[7:11]``
are 64 channels at the same stride, so ending at 13 gives the deepest stride-16 map).

Weights: ``"imagenet"`` (torchvision's V1 ImageNet weights, as RD4AD and STFPM used, from
torch.hub's cache or a download), ``"none"`` (random init) or a path to a state dict.
Setting ``ADKD_OFFLINE=1`` forbids the download, so only the cache is tried.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from adkd.errors import ConfigError, WeightsError
from adkd.models.checks import BACKBONES, check_weights_file
from adkd.settings import downloads_allowed

_BUILDERS: dict[str, tuple[Callable[..., nn.Module], object]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (tvm.wide_resnet50_2, tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
    "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
}
_MOBILENET_LEVEL_ENDS = (3, 6, 13)  # inclusive indices into mobilenet_v2.features


def hub_checkpoint_dir() -> Path:
    """Where torchvision caches downloaded weights (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_file(backbone: str) -> str:
    """The file name torchvision gives the ImageNet weights of ``backbone``."""
    _check_name(backbone)
    return _BUILDERS[backbone][1].url.rsplit("/", 1)[-1]


def _check_name(backbone: str) -> None:
    if backbone not in _BUILDERS:
        msg = f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}"
        raise ConfigError(msg)


class FeatureExtractor(nn.Module):
    """The stem and first three stages of a torchvision CNN, returning the three stage outputs.

    ``frozen=True`` makes it a teacher: no parameter needs a gradient and ``train()`` keeps it
    in eval mode, so its BatchNorm statistics never change.
    """

    def __init__(self, backbone: str, frozen: bool = True, init: bool = True) -> None:
        super().__init__()
        _check_name(backbone)
        self.backbone = backbone
        self.frozen = frozen
        # Built on the meta device so the unused head (layer4, fc, classifier) costs nothing;
        # the kept part is then materialised and initialised as torchvision does (or left for
        # the caller to fill from a state dict when ``init`` is False).
        with torch.device("meta"):
            net = _BUILDERS[backbone][0](weights=None)
        if backbone == "mobilenet_v2":
            self.features = net.features[: _MOBILENET_LEVEL_ENDS[-1] + 1]
            self.channels: tuple[int, int, int] = (24, 32, 96)
        else:
            self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
            self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
            width = 64 if backbone == "resnet18" else 256
            self.channels = (width, 2 * width, 4 * width)
        self.strides: tuple[int, int, int] = (4, 8, 16)
        self.to_empty(device="cpu")
        if init:
            self.reset_parameters()
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def reset_parameters(self) -> None:
        """torchvision's init: Kaiming-normal (fan_out) convs, zero conv biases, unit BatchNorm."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # A frozen teacher stays in eval mode whatever its parent asks.
        return super().train(mode and not self.frozen)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.frozen:
            with torch.no_grad():
                return self._levels(images)
        return self._levels(images)

    def _levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.backbone == "mobilenet_v2":
            feats, x = [], images
            for i, block in enumerate(self.features):
                x = block(x)
                if i in _MOBILENET_LEVEL_ENDS:
                    feats.append(x)
            return feats
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def build_backbone(backbone: str, weights: str | os.PathLike = "imagenet", frozen: bool = True) -> FeatureExtractor:
    """A three-level extractor for ``backbone`` with ``weights`` = "imagenet" | "none" | a state-dict path."""
    _check_name(backbone)
    spec = os.fspath(weights)
    if spec == "none":
        return FeatureExtractor(backbone, frozen=frozen)
    state = _imagenet_state_dict(backbone) if spec == "imagenet" else _file_state_dict(Path(spec).expanduser())
    extractor = FeatureExtractor(backbone, frozen=frozen, init=False)
    load_weights(extractor, state, source=spec)
    return extractor


def load_weights(extractor: FeatureExtractor, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``extractor``: every key it uses must be present with the right shape.

    The load is strict on the extractor's own keys, so nothing is left uninitialised.
    Keys the extractor does not use (``fc.*``, ``layer4.*``, ``classifier.*``, later
    ``features.*``) are ignored, so a full torchvision state dict and a MobileNetV2
    ``features.*`` one both load.
    """
    if not isinstance(state, dict):
        msg = f"weights {source}: expected a state dict (name -> tensor), got {type(state).__name__}"
        raise WeightsError(msg)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = extractor.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        msg = (
            f"weights {source}: missing {len(missing)} of the {len(own)} keys a {extractor.backbone} "
            f"teacher needs ({shown}); pass a torchvision {extractor.backbone} state dict, or weights='none'"
        )
        raise WeightsError(msg)
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        msg = (
            f"weights {source}: {len(wrong)} tensors have the wrong shape for {extractor.backbone} "
            f"(e.g. {k}: {tuple(state[k].shape)} instead of {tuple(own[k].shape)}); "
            f"is it a state dict of another architecture?"
        )
        raise WeightsError(msg)
    extractor.load_state_dict({k: state[k] for k in own}, strict=True)


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    check_weights_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        msg = f"weights file {path} cannot be read as a state dict ({type(exc).__name__}: {exc})"
        raise WeightsError(msg.splitlines()[0]) from exc


def _imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    name = imagenet_weights_file(backbone)
    cached = hub_checkpoint_dir() / name
    if cached.is_file():
        return _file_state_dict(cached)
    offline_hint = (
        f"ImageNet weights for {backbone} are not cached: copy {name} into {hub_checkpoint_dir()} "
        f"(or set TORCH_HOME), or pass weights=<path to a state dict> or weights='none'"
    )
    if not downloads_allowed():
        raise WeightsError(f"{offline_hint} (ADKD_OFFLINE is set, so no download was tried)")
    try:
        return _BUILDERS[backbone][1].get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "no usable download"
        raise WeightsError(f"{offline_hint} (download failed: {type(exc).__name__})") from exc


def ensure_imagenet_weights(backbone: str) -> None:
    """Have torchvision's ImageNet weights for ``backbone`` in its cache (downloads once); WeightsError if not."""
    if backbone not in _BUILDERS:
        raise WeightsError(f"backbone={backbone!r}: choose one of {', '.join(_BUILDERS)}")
    if not (hub_checkpoint_dir() / imagenet_weights_file(backbone)).is_file():  # a cached file is read when built
        _imagenet_state_dict(backbone)
