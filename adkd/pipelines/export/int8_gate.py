"""The accuracy gate of an int8 model: a function of (fp32 predictor, int8 predictor, gate images).

It works on predictors (anything ``adkd.pipelines.predict.open_predictor`` returns), so it gates any int8
artifact, ONNX Runtime's or another runtime's. The images come from the run's validation normals, split in
two (``split_validation``): the int8 model is calibrated, and its thresholds refitted, on the calibration
part only; the gate measures on the other part, which neither saw:

- **false positives on held-out normals**: the held-out normals int8 flags at its own (refit) image threshold
  may exceed those fp32 flags at a threshold fitted the same way (same quantile of its scores on the
  calibration part) by at most ``MAX_FPR_RISE`` of them, and never by more than one image when that is less;
- **image scores**: Pearson r of int8's with fp32's on the held-out normals and their synthetic-defect
  copies >= ``MIN_SCORE_CORRELATION``;
- **maps**: Pearson r of the anomaly maps over the valid pixels of those images >= ``MIN_MAP_CORRELATION``
  (a single layer's weights off by 2x, or 0.5x in an early layer, fell to 0.80-0.94 on a trained stfpm;
  good int8 graphs measured 0.99);
- **image AUROC** on the synthetic defects at most ``MAX_AUROC_DROP`` below fp32's, or one swapped
  (normal, defect) pair on a gate set so small that one pair weighs more.

The pixel AUROC of both models on the synthetic defects is reported beside them, not gated: on a model
whose maps barely separate synthetic defects it moves by several hundredths with int8's noise alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from adkd.pipelines.inference.artifact import ScoresImages, score_artifact

MIN_SCORE_CORRELATION = 0.95
MIN_MAP_CORRELATION = 0.95
MAX_AUROC_DROP = 0.01  # image AUROC on the synthetic defects, int8 below fp32 (at least one swapped pair)
MAX_FPR_RISE = 0.05  # extra false positives on the held-out normals, as a fraction of them (at least one image)
MIN_CALIBRATION_IMAGES = 4
MIN_GATE_IMAGES = 4
MIN_VALIDATION_IMAGES = MIN_CALIBRATION_IMAGES + MIN_GATE_IMAGES


@dataclass(frozen=True)
class GateBounds:
    """The gate's limits (the defaults are the module's constants)."""

    min_score_correlation: float = MIN_SCORE_CORRELATION
    min_map_correlation: float = MIN_MAP_CORRELATION
    max_auroc_drop: float = MAX_AUROC_DROP
    max_fpr_rise: float = MAX_FPR_RISE


DEFAULT_BOUNDS = GateBounds()


def split_validation(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (calibration, held out) of ``n`` validation images: a seeded half each (calibration the
    larger half)."""
    order = np.random.default_rng(seed + 7919).permutation(n)  # an offset: not the train/val split's stream
    n_cal = (n + 1) // 2
    return np.sort(order[:n_cal]), np.sort(order[n_cal:])


@dataclass
class GateImages:
    """What the gate scores: uint8 NHWC images; masks bool [N,1,h,w] at the map size (None: all valid)."""

    calibration: np.ndarray  # the normals the int8 model was calibrated and its thresholds fitted on
    normals: np.ndarray  # held-out normals
    defects: np.ndarray  # held-out normals with a synthetic defect each
    defect_masks: torch.Tensor  # bool [D,1,h,w]
    quantile: float  # of the calibration scores: the image threshold of both models
    source: str = "validation images"
    valid_calibration: torch.Tensor | None = None
    valid_normals: torch.Tensor | None = None
    valid_defects: torch.Tensor | None = None


@dataclass
class Int8Gate:
    """How the int8 model compares with the fp32 one on the gate images."""

    n_calibration: int
    n_normals: int
    n_defects: int
    score_correlation: float
    map_correlation: float
    fp32_false_positives: int  # held-out normals above fp32's threshold fitted like int8's
    int8_false_positives: int  # held-out normals above int8's own (refit) threshold
    allowed_extra_false_positives: int
    fp32_image_auroc: float
    int8_image_auroc: float
    fp32_pixel_auroc: float
    int8_pixel_auroc: float
    int8_image_threshold: float
    source: str
    bounds: dict[str, float] = field(default_factory=lambda: asdict(DEFAULT_BOUNDS))

    @property
    def extra_false_positives(self) -> int:
        return self.int8_false_positives - self.fp32_false_positives

    def problems(self) -> list[str]:
        b = GateBounds(**self.bounds)
        out = []
        if self.extra_false_positives > self.allowed_extra_false_positives:
            out.append(
                f"{self.int8_false_positives} of {self.n_normals} held-out normals flagged against fp32's "
                f"{self.fp32_false_positives} (allowed {self.allowed_extra_false_positives} more)"
            )
        if not self.score_correlation >= b.min_score_correlation:
            out.append(f"image scores correlate {self.score_correlation:.4f} (needs >= {b.min_score_correlation})")
        if not self.map_correlation >= b.min_map_correlation:
            out.append(f"anomaly maps correlate {self.map_correlation:.4f} (needs >= {b.min_map_correlation})")
        one_pair = 1.0 / max(self.n_normals * self.n_defects, 1)
        if not self.int8_image_auroc >= self.fp32_image_auroc - max(b.max_auroc_drop, one_pair):
            out.append(f"synthetic-defect image AUROC fell {self.fp32_image_auroc:.4f} -> {self.int8_image_auroc:.4f}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def metrics(self, prefix: str = "int8") -> dict[str, float]:
        """The gate's figures as ``<prefix>/...`` metrics."""
        figures = {
            "score_correlation": self.score_correlation,
            "map_correlation": self.map_correlation,
            "heldout_false_positives": float(self.int8_false_positives),
            "heldout_false_positives_fp32": float(self.fp32_false_positives),
            "gate_image_auroc": self.int8_image_auroc,
            "gate_image_auroc_fp32": self.fp32_image_auroc,
            "gate_pixel_auroc": self.int8_pixel_auroc,
            "gate_pixel_auroc_fp32": self.fp32_pixel_auroc,
        }
        return {f"{prefix}/{k}": v for k, v in figures.items()}


@dataclass
class GateScores:
    """One model's outputs on ``images`` (``calibration``: the calibration part's scores, None when not scored)."""

    images: GateImages
    normal_maps: torch.Tensor
    normal: torch.Tensor
    defect_maps: torch.Tensor
    defect: torch.Tensor
    calibration: torch.Tensor | None = None


def gate_scores(predictor: ScoresImages, images: GateImages, calibration: bool = True) -> GateScores:
    """``predictor``'s maps and scores of the gate images; the calibration part only with ``calibration`` (the fp32
    reference's threshold is fitted on those scores; the int8 model ships its own, fitted on them already)."""
    cal = score_artifact(predictor, images.calibration, images.valid_calibration)[1] if calibration else None
    normal_maps, normal = score_artifact(predictor, images.normals, images.valid_normals)
    defect_maps, defect = score_artifact(predictor, images.defects, images.valid_defects)
    return GateScores(images, normal_maps, normal, defect_maps, defect, cal)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _cat_valid(*parts: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor | None:
    """Masks of concatenated image sets (a set without masks is all valid); None when all are None."""
    if all(v is None for v, _ in parts):
        return None
    return torch.cat([torch.ones_like(maps, dtype=torch.bool) if v is None else v.bool() for v, maps in parts])


def int8_gate(
    fp32: ScoresImages | GateScores, int8: ScoresImages, images: GateImages, bounds: GateBounds = DEFAULT_BOUNDS
) -> Int8Gate:
    """The gate's figures for any int8 predictor against its fp32 reference (``ok`` says whether it passes).

    ``fp32``: the reference predictor, or its ``gate_scores`` of ``images`` (calibration included) when they were
    measured already for another int8 model. ``int8.image_threshold`` must be the one the int8 artifact ships,
    fitted on ``images.calibration`` at ``images.quantile`` (``adkd.pipelines.export.quantize`` does so).
    """
    from adkd.pipelines.evaluate.metrics import image_auroc, pixel_auroc

    ref = fp32 if isinstance(fp32, GateScores) else gate_scores(fp32, images)
    if ref.calibration is None or ref.images is not images:
        raise ValueError("the fp32 reference scores are not those of these gate images (calibration included)")
    own = gate_scores(int8, images, calibration=False)
    cal32, nm32, n32, dm32, d32 = ref.calibration, ref.normal_maps, ref.normal, ref.defect_maps, ref.defect
    nm8, n8, dm8, d8 = own.normal_maps, own.normal, own.defect_maps, own.defect
    t32 = float(np.quantile(cal32.numpy().astype(np.float64), images.quantile))
    t8 = float(int8.image_threshold)  # type: ignore[attr-defined]
    fp32_fp, int8_fp = int((n32 > t32).sum()), int((n8 > t8).sum())
    n = len(images.normals)

    labels = np.r_[np.zeros(len(n32)), np.ones(len(d32))]
    maps32, maps8 = torch.cat([nm32, dm32]), torch.cat([nm8, dm8])
    gt = torch.cat([torch.zeros_like(nm32, dtype=torch.bool), images.defect_masks.bool()])
    valid = _cat_valid((images.valid_normals, nm32), (images.valid_defects, dm32))
    keep = torch.ones_like(maps32, dtype=torch.bool) if valid is None else valid
    return Int8Gate(
        n_calibration=len(images.calibration),
        n_normals=n,
        n_defects=len(images.defects),
        score_correlation=_pearson(torch.cat([n32, d32]).numpy(), torch.cat([n8, d8]).numpy()),
        map_correlation=_pearson(maps32[keep].numpy(), maps8[keep].numpy()),
        fp32_false_positives=fp32_fp,
        int8_false_positives=int8_fp,
        allowed_extra_false_positives=max(1, math.floor(bounds.max_fpr_rise * n)),
        fp32_image_auroc=image_auroc(torch.cat([n32, d32]).numpy(), labels),
        int8_image_auroc=image_auroc(torch.cat([n8, d8]).numpy(), labels),
        fp32_pixel_auroc=pixel_auroc(maps32, gt, valid=valid),
        int8_pixel_auroc=pixel_auroc(maps8, gt, valid=valid),
        int8_image_threshold=t8,
        source=images.source,
        bounds=asdict(bounds),
    )


def require_validation_images(n: int) -> None:
    """A one-line ConfigError unless ``n`` validation images are enough to calibrate and gate an int8 model."""
    from adkd.errors import ConfigError

    if n < MIN_VALIDATION_IMAGES:
        raise ConfigError(
            f"export_int8 needs at least {MIN_VALIDATION_IMAGES} validation images ({MIN_CALIBRATION_IMAGES} to "
            f"calibrate, {MIN_GATE_IMAGES} held out for the gate), got {n}; raise val_fraction or add train/good images"
        )


def center_crop(t: torch.Tensor | None, size: int | None) -> torch.Tensor | None:
    """The centred ``size`` square of [N,C,H,W] (the model's crop); unchanged without one."""
    if t is None or size is None or size == t.shape[-1]:
        return t
    o = (t.shape[-1] - size) // 2
    return t[..., o : o + size, o : o + size]


def gate_images(
    validation: torch.Tensor,
    seed: int,
    quantile: float,
    *,
    valid: torch.Tensor | None = None,
    map_size: int | None = None,
    source: str = "validation images",
) -> GateImages:
    """Split uint8 [N,3,S,S] validation normals into the calibration part and the gate's held-out normals, and
    paint a synthetic defect on a copy of each held-out normal.

    ``valid`` (bool [N,1,S,S], the input's image area; None = all) keeps defects off letterbox padding;
    ``map_size``: the side of the model's maps when it scores a centred crop of the input.
    """
    from adkd.pipelines.data.synthetic_defects import with_synthetic_defects
    from adkd.pipelines.inference.artifact import nhwc

    n = len(validation)
    require_validation_images(n)
    cal, held = split_validation(n, seed)
    normals = validation[torch.from_numpy(held)]
    painted = with_synthetic_defects(normals, seed=seed)
    defects, masks = painted.images[len(held) :], painted.masks[len(held) :].bool()
    held_valid = None if valid is None else valid[torch.from_numpy(held)].bool()
    if held_valid is not None:  # padding stays padding: the defect is only what lands on the image
        defects = torch.where(held_valid, defects, normals)
        masks = masks & held_valid
    if map_size is not None and map_size != masks.shape[-1]:
        o = (masks.shape[-1] - map_size) // 2
        masks = masks[..., o : o + map_size, o : o + map_size]
    visible = masks.flatten(1).any(dim=1)
    if not bool(visible.any()):
        from adkd.errors import ConfigError

        raise ConfigError("no synthetic defect landed inside the model's view of the validation images")
    map_valid = center_crop(valid, map_size)
    return GateImages(
        calibration=nhwc(validation[torch.from_numpy(cal)]),
        normals=nhwc(normals),
        defects=nhwc(defects[visible]),
        defect_masks=masks[visible],
        quantile=quantile,
        source=source,
        valid_calibration=None if map_valid is None else map_valid[torch.from_numpy(cal)].bool(),
        valid_normals=None if map_valid is None else map_valid[torch.from_numpy(held)].bool(),
        valid_defects=None if map_valid is None else map_valid[torch.from_numpy(held)][visible].bool(),
    )
