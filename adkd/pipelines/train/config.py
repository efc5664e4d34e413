"""The settings of one category's training run, validated so a typo fails with a clear message."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adkd.errors import ConfigError
from adkd.pipelines.data.gate import GateOptions
from adkd.pipelines.export.schemes import DEFAULT_INT8_SCHEME, Int8Scheme


class OptimizerConfig(BaseModel):
    """Optimiser of the student (and, for stfpm-ae, of the autoencoder in the joint phase)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(0.005, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)


class TilingConfig(BaseModel):
    """High-resolution images as tiles: train on tiles, score overlapping tiles and stitch their maps back.

    Off while ``tile_size`` is unset. The model then sees ``tile_size`` squares cut from the image at
    ``image_size`` (None: the image's own resolution); see ``adkd.pipelines.tiling``.
    """

    model_config = ConfigDict(extra="forbid")

    tile_size: int | None = Field(None, ge=32, description="Side of the square tiles the model sees; None = off.")
    stride: int | None = Field(None, ge=8, description="Step between tiles; None = 3/4 of tile_size.")
    image_size: int | None = Field(
        None, ge=32, description="Square side the image is first brought to (resize policy); None = its own size."
    )
    mode: Literal["shared", "per_position"] = Field(
        "shared", description="One model for every tile, or one model per tile position (aligned parts)."
    )
    blend: Literal["linear", "mean"] = Field("linear", description="How overlapping tile maps are blended.")
    max_tiles_per_epoch: int = Field(
        4096, ge=1, description="With more training tiles than this, each epoch sees a seeded subset of this size."
    )
    position: int | None = Field(None, ge=0, description="Set by adkd: the tile position a per-position job trains.")

    @model_validator(mode="after")
    def _consistent(self) -> TilingConfig:
        if self.tile_size is None:
            changed = [k for k in ("stride", "image_size", "position") if getattr(self, k) is not None]
            if self.mode != "shared":
                changed.append("mode")
            if changed:
                raise ValueError(f"tiling.{changed[0]} needs tiling.tile_size: set the tile side, e.g. 256")
            return self
        if self.stride is not None and self.stride > self.tile_size:
            raise ValueError(f"stride {self.stride} is larger than tile_size {self.tile_size}: pixels would be skipped")
        if self.image_size is not None and self.image_size < self.tile_size:
            raise ValueError(f"image_size {self.image_size} is smaller than tile_size {self.tile_size}")
        if self.position is not None and self.mode != "per_position":
            raise ValueError("tiling.position is for mode=per_position")
        return self

    @property
    def enabled(self) -> bool:
        return self.tile_size is not None

    @property
    def splits_positions(self) -> bool:
        """A per-position run to split into one job per tile position (not one position's job itself)."""
        return self.mode == "per_position" and self.position is None

    @property
    def step(self) -> int:
        """The stride in pixels (its default when unset)."""
        assert self.tile_size is not None
        return self.stride or max(1, self.tile_size * 3 // 4)


class TrainConfig(BaseModel):
    """Everything that decides what one training run does; saved beside its checkpoints."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    category: str = Field(min_length=1)
    data: str = Field(min_length=1, description="Data root (MVTec layout): a local path or an s3:// URI.")
    model: str = Field(min_length=1)
    preset: str = "custom"
    backbone: str | None = Field(None, description="None = the model's default backbone.")
    weights: str = Field("imagenet", description='Teacher weights: "imagenet", "none" or a state-dict path.')
    image_size: int = Field(256, ge=16)
    resize: Literal["stretch", "letterbox", "center-crop"] = Field(
        "stretch", description="How an image of any size becomes image_size square: squash, pad or crop."
    )
    crop_size: int | None = Field(None, ge=16)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    epochs: int = Field(200, ge=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: Literal["none", "cosine"] = "none"
    model_options: dict[str, Any] = Field(default_factory=dict, description="Passed to build_model.")
    val_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool | None = Field(
        None, description="bf16 autocast; None = on where bf16 is native (CUDA, CPUs with avx512_bf16 or AMX)."
    )
    channels_last: bool | None = Field(None, description="None = on CUDA; on CPU it follows amp.")
    teacher_cache: bool | None = Field(
        None, description="Compute the frozen teacher's features once per run; None = on unless augmentation is on."
    )
    teacher_cache_max_gb: float = Field(4.0, ge=0, description="Above this the teacher cache is a file in the run dir.")
    compile: bool = Field(False, description="torch.compile the training steps (compiling takes time in epoch 1).")
    export_onnx: bool = Field(True, description="Export model.onnx into the run folder at the end (off for tuning).")
    export_int8: bool = Field(False, description="Also export the gated int8 ONNX model for CPU inference.")
    # qdq-u8s8: the fastest on an AVX512-VNNI Xeon with the same accuracy (benchmarks/int8_variants.py).
    int8_scheme: Int8Scheme = Field(
        DEFAULT_INT8_SCHEME, description="ONNX Runtime quantization layout of the int8 model (export.schemes)."
    )
    int8_runtimes: list[Literal["onnxruntime", "openvino"]] = Field(
        default_factory=lambda: ["onnxruntime", "openvino"],
        description="With export_int8: the runtimes that get a gated int8 model (ONNX Runtime static, OpenVINO NNCF).",
    )
    time_runtimes: bool | None = Field(
        None,
        description="Time each gated runtime variant here at export and record the fastest (runtime=auto); "
        "None = on with export_int8.",
    )
    float_runtimes: list[Literal["openvino", "openvino-bf16"]] = Field(
        default_factory=lambda: ["openvino", "openvino-bf16"],
        description="With time_runtimes: the fp32 file's OpenVINO variants measured on their own (thresholds, "
        "gate, test metrics) so runtime=auto may run them; bf16 only on CPUs that have it; [] = none.",
    )
    early_stopping: int = Field(0, ge=0, description="Patience in epochs on validation loss; 0 = off.")
    keep: Literal["last", "best_val_loss"] = "last"
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the gradient norm; None = off.")
    threshold_quantile: float = Field(0.99, gt=0, lt=1)
    out_dir: str = "adkd-runs/train"
    skip_validation: bool = False
    data_gate: GateOptions = Field(default_factory=GateOptions, description="Options of the training data gate.")
    evaluate_test: bool = Field(True, description="Score the test split at the end (off for tuning trials).")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch's default.")
    tiling: TilingConfig = Field(default_factory=TilingConfig, description="Tiled training and inference.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.crop_size is not None and self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than image_size {self.image_size}")
        needs_val = self.keep == "best_val_loss" or self.early_stopping > 0
        if needs_val and self.val_fraction == 0:
            raise ValueError("keep=best_val_loss and early_stopping need validation images: set val_fraction > 0")
        if self.export_int8 and not self.export_onnx:
            raise ValueError("export_int8=true quantizes model.onnx: set export_onnx=true too")
        if self.export_int8 and self.val_fraction == 0:
            raise ValueError(
                "export_int8=true calibrates and gates the int8 model on validation images: set val_fraction > 0 "
                "(e.g. 0.2)"
            )
        if self.tiling.enabled and self.crop_size is not None:
            raise ValueError("crop_size and tiling.tile_size do not combine: tiles cover the whole image")
        return self

    @property
    def eval_size(self) -> int:
        """Side of the images the model sees (the crop when there is one, the tile when tiled)."""
        if self.tiling.tile_size is not None:
            return self.tiling.tile_size
        return self.crop_size or self.image_size

    @property
    def data_size(self) -> int | None:
        """The square side images are loaded at: image_size, or with tiling tiling.image_size (None: own size)."""
        return self.tiling.image_size if self.tiling.enabled else self.image_size

    def run_dir_name(self) -> str:
        return f"{self.model}/{self.category}"

    def resolved(self) -> TrainConfig:
        """This config as a run trains and stores it: the model's default backbone when unset, and every model
        option (``model_options`` over its builder's defaults; ``image_size``, for the models sized by it, the
        side the model sees: ``eval_size``, the tile when tiled). Unknown options raise ConfigError."""
        from adkd.models.zoo import model_spec

        spec = model_spec(self.model)
        options = dict(self.model_options)
        if "image_size" in spec.defaults:
            options.setdefault("image_size", self.eval_size)
        return self.model_copy(
            update={"backbone": self.backbone or spec.default_backbone, "model_options": spec.resolve(options)}
        )

    @property
    def total_epochs(self) -> int:
        """Epochs of all phases: stfpm-ae's autoencoder pretraining (``model_options.ae_pretrain_epochs``), training."""
        return self.epochs + int(self.resolved().model_options.get("ae_pretrain_epochs") or 0)


log = logging.getLogger(__name__)

# Settings that moved into a model's options, with the value they had by default where they were.
# Configs and checkpoints written before the move keep loading: the value moves, with a note.
MOVED_TO_MODEL_OPTIONS: dict[str, tuple[str, Any]] = {
    "ae_pretrain_epochs": ("stfpm-ae", 0),
    "ae_pretrain_lr": ("stfpm-ae", 1e-3),
    "ae_lr": ("stfpm-ae", None),
    "ae_freeze_epochs": ("stfpm-ae", 0),
}
# Values a setting no longer takes → (the value read instead, why); stored configs keep loading.
RETIRED_VALUES: dict[tuple[str, Any], tuple[Any, str]] = {
    ("int8_scheme", "qop-u8u8"): ("qop-u8s8", "ONNX Runtime writes QLinearConv's per-channel weights as int8 anyway"),
}


def upgrade_settings(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """``values`` with moved settings and retired values in today's form; one line per change in ``notes``."""
    values = dict(values)
    model = values.get("model")
    for key, (owner, old_default) in MOVED_TO_MODEL_OPTIONS.items():
        if key not in values:
            continue
        value = values.pop(key)
        if model != owner:
            if value != old_default:
                raise ConfigError(f"setting '{key}' is for {owner} (now model_options.{key}); model '{model}' has none")
            continue  # every config of that time carried it at its default
        values["model_options"] = {**(values.get("model_options") or {}), key: value}
        notes.append(f"setting '{key}' is now 'model_options.{key}' (read as such)")
    for (key, old), (new, why) in RETIRED_VALUES.items():
        if values.get(key) == old:
            values[key] = new
            notes.append(f"{key}={old!r} was retired ({why}); read as {new!r}")
    return values


def validate_config(values: dict[str, Any], source: str = "config", notes: list[str] | None = None) -> TrainConfig:
    """Build a TrainConfig, turning pydantic's report into one ConfigError line.

    Settings written by an earlier adkd are upgraded first (``upgrade_settings``); the notes go to
    ``notes`` when given, else to the log (stderr) one line each.
    """
    changes: list[str] = []
    values = upgrade_settings(values, changes)
    if notes is not None:
        notes.extend(changes)
    else:
        for change in changes:
            log.warning("note: %s: %s", source, change)
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown setting '{where}'")
            elif err["type"] == "list_type":  # e.g. --set int8_runtimes=openvino
                how = f"write it as [a, b] (--set {where}=[a,b], [] for none)"
                problems.append(f"setting '{where}': {err['msg']}: {how}")
            else:
                problems.append(f"setting '{where}': {err['msg']}")
        known = ", ".join(sorted(TrainConfig.model_fields))
        hint = f" (known settings: {known})" if any("unknown" in p for p in problems) else ""
        raise ConfigError(f"{source}: " + "; ".join(problems) + hint) from None


def check_model_settings(config: TrainConfig) -> None:
    """The model's settings (its defaults under ``model_options``) checked before data or weights are loaded."""
    from adkd.models.checks import check_model_settings as check
    from adkd.models.zoo import MODEL_ZOO

    spec = MODEL_ZOO.get(config.model)
    if spec is None:
        raise ConfigError(f"unknown model '{config.model}'; choose one of {', '.join(MODEL_ZOO)}")
    check(config.eval_size, spec.resolve(config.model_options))


def check_teacher_weights(config: TrainConfig) -> None:
    """The teacher's weights can be had on this machine, or WeightsError in one line.

    A state-dict file must exist; ImageNet's must be in torch.hub's cache or are downloaded into it now (once, so
    the runs that train here read the cache). Called where training runs on this machine, before the data gate and
    any tracking run, so a wrong path or an offline machine is refused before work starts.
    """
    from adkd.models.checks import check_weights_file

    check_weights_file(config.weights)
    if config.weights == "imagenet":
        from adkd.models.backbones import ensure_imagenet_weights

        ensure_imagenet_weights(config.resolved().backbone or "")
