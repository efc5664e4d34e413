"""Building blocks shared by the models."""

from adkd.models.components.anomaly_map import AnomalyMap, combine_levels, cosine_distance, distance_map, image_scores
from adkd.models.components.blur import GaussianBlur2d, gaussian_kernel1d
from adkd.models.components.bottleneck import OneClassBottleneck
from adkd.models.components.de_resnet import DeBasicBlock, DeBottleneck, MirrorDecoder
from adkd.models.components.fmm import FeatureGenerator, FeatureMaskGeneration, RandomFeatureMask
from adkd.models.components.scconv import CRU, SRU, SCConv
from adkd.models.components.simam import SimAM

__all__ = [
    "CRU",
    "SRU",
    "AnomalyMap",
    "DeBasicBlock",
    "DeBottleneck",
    "FeatureGenerator",
    "FeatureMaskGeneration",
    "GaussianBlur2d",
    "MirrorDecoder",
    "OneClassBottleneck",
    "RandomFeatureMask",
    "SCConv",
    "SimAM",
    "combine_levels",
    "cosine_distance",
    "distance_map",
    "gaussian_kernel1d",
    "image_scores",
]
