"""Tiled training: the tiles an epoch trains on, the whole-image eval model, and per-position runs.

With ``tiling.tile_size`` set the engine loads images at ``tiling.image_size`` (None: their own size), trains
on tiles cut on demand (``adkd.pipelines.data.tiles.TileSet``) and scores whole images through
``TiledModel``, so thresholds, metrics and overlays use the stitched full-resolution map.

``tiling.mode=per_position`` trains one model per tile position: one job per position (each an ordinary
run on that position's tiles, ``tiling.position`` set), then ``assemble_positions`` puts the position models
into one ``PerPositionModel``, fits its thresholds, evaluates and exports it as one artifact. The jobs run
one after another here; ``adkd.platform.runs`` runs them in parallel on Ray with the same function.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.data.tiles import TileSet
from adkd.pipelines.tiling.grid import TileGrid
from adkd.pipelines.tiling.model import PerPositionModel, TiledModel
from adkd.pipelines.tiling.spec import TilingSpec
from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult, emit
from adkd.pipelines.train.config import TrainConfig

VAL_TILES = 256  # held-out tiles for the per-epoch validation loss: a fixed seeded subset above this

PositionTrainer = Callable[[list[TrainConfig]], list[TrainResult]]


def tile_grid(config: TrainConfig, images: torch.Tensor) -> TileGrid:
    tiling = config.tiling
    assert tiling.tile_size is not None
    return TileGrid(int(images.shape[-2]), int(images.shape[-1]), tiling.tile_size, tiling.step)


def tiling_spec(config: TrainConfig, images: torch.Tensor) -> TilingSpec:
    return TilingSpec.from_config(config.tiling, int(images.shape[-2]), int(images.shape[-1]))


def training_sources(
    config: TrainConfig, data: Any, device: torch.device, notes: list[str]
) -> tuple[torch.Tensor | TileSet, torch.Tensor | TileSet]:
    """What the training loop indexes (images, or their tiles on ``device``) and the held-out loss reads."""
    if not config.tiling.enabled:
        return data.train.to(device), data.val
    grid = tile_grid(config, data.train)
    position = config.tiling.position
    train = TileSet(data.train.to(device), grid, position)
    val = TileSet(data.val, grid, position)
    if len(val) > VAL_TILES:
        gen = torch.Generator().manual_seed(config.seed)
        val = val.with_subset(torch.randperm(len(val), generator=gen)[:VAL_TILES].sort().values)
    where = f"position {position} of {len(grid)}" if position is not None else f"{len(grid)} tiles per image"
    limit = config.tiling.max_tiles_per_epoch
    per_epoch = f"; each epoch a seeded subset of {limit}" if train.total > limit else ""
    notes.append(
        f"tiled: {grid.width}x{grid.height} images, {grid.tile} px tiles every {grid.stride} px ({where}); "
        f"{train.total} training tiles{per_epoch} (settings tiling.*)"
    )
    return train, val


def limit_epoch(order: torch.Tensor, config: TrainConfig, world_size: int = 1) -> torch.Tensor:
    """An epoch's tile order cut to ``tiling.max_tiles_per_epoch`` (shared among ranks): a seeded subset."""
    if not config.tiling.enabled:
        return order
    return order[: max(1, config.tiling.max_tiles_per_epoch // world_size)]


def cache_allowed(config: TrainConfig, train: Any, notes: list[str]) -> bool:
    """Whether the teacher cache may hold every training tile's features (not when epochs see subsets)."""
    if not isinstance(train, TileSet) or train.total <= config.tiling.max_tiles_per_epoch:
        return True
    if config.teacher_cache:
        raise ConfigError(
            f"teacher_cache=true but each epoch trains on a subset of {config.tiling.max_tiles_per_epoch} of "
            f"{train.total} tiles: raise tiling.max_tiles_per_epoch to {train.total} or leave teacher_cache unset"
        )
    notes.append(
        f"teacher feature cache off: epochs see {config.tiling.max_tiles_per_epoch} of {train.total} tiles, "
        "so caching every tile's features would compute features no epoch uses"
    )
    return False


def eval_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """What scores whole images: the model itself, or the tiled model around it."""
    tiling = config.tiling
    if not tiling.enabled:
        return model
    assert tiling.tile_size is not None
    return TiledModel(model, tiling.tile_size, tiling.step, tiling.blend, tiles_per_call=config.eval_batch_size)


def tiling_meta(config: TrainConfig, images: torch.Tensor) -> dict[str, Any]:
    """The checkpoint's ``tiling`` entry (empty when untiled)."""
    return {"tiling": tiling_spec(config, images).to_meta()} if config.tiling.enabled else {}


# ------------------------------------------------------------------------------------------ per position


def image_hw(config: TrainConfig) -> tuple[int, int]:
    """(height, width) of the category's images as tiling sees them, from the first training image's header."""
    if config.tiling.image_size is not None:
        return config.tiling.image_size, config.tiling.image_size
    from PIL import Image

    from adkd.pipelines.data.dataset import local_root
    from adkd.pipelines.data.mvtec import is_image_file

    folder = local_root(config.data) / config.category / "train" / "good"
    first = next((p for p in sorted(folder.iterdir()) if is_image_file(p)), None) if folder.is_dir() else None
    if first is None:
        raise ConfigError(f"{folder} holds no images: add normal training images")
    with Image.open(first) as img:
        return img.height, img.width


def position_configs(config: TrainConfig, run_dir: Path) -> list[TrainConfig]:
    """One job per tile position: trains that position's tiles, writes model.pt only, under ``run_dir``."""
    h, w = image_hw(config)
    assert config.tiling.tile_size is not None
    n = len(TileGrid(h, w, config.tiling.tile_size, config.tiling.step))
    return [
        config.model_copy(
            update={
                "tiling": config.tiling.model_copy(update={"position": p}),
                "out_dir": str(run_dir / "positions" / f"p{p:03d}"),
                "evaluate_test": False,
                "export_onnx": False,
                "export_int8": False,
                "skip_validation": True,  # the gate ran once for the category
            }
        )
        for p in range(n)
    ]


class _Relay(NullCallback):
    """A position job's epoch metrics passed on under ``posNNN/`` (the assembled run logs every position)."""

    def __init__(self, callbacks: Sequence[TrainCallback], position: int) -> None:
        self.callbacks, self.prefix = callbacks, f"pos{position:03d}/"

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        emit(self.callbacks, "on_epoch_end", epoch, {self.prefix + k: v for k, v in metrics.items()})


def sequential_trainer(train_one: Callable[..., TrainResult], callbacks: Sequence[TrainCallback]) -> PositionTrainer:
    """The position jobs one after another in this process, their epochs relayed to ``callbacks``."""

    def run(configs: list[TrainConfig]) -> list[TrainResult]:
        return [train_one(c, [_Relay(callbacks, p)]) for p, c in enumerate(configs)]

    return run


def train_per_position(
    config: TrainConfig, callbacks: Sequence[TrainCallback], trainer: PositionTrainer
) -> TrainResult:
    """Train every tile position with ``trainer``, then assemble, evaluate and export one model.

    The callbacks see one run: its start, the positions' epochs (``posNNN/...`` metrics, when the trainer
    relays them), the assembled model's artifacts and its end. Errors behave as in ``train_category``.
    """
    started = time.perf_counter()
    run_dir = Path(config.out_dir) / config.model / config.category  # engine.run_dir_for
    result = TrainResult(config.category, config.model, "RUNNING", run_dir, config=config.model_dump(mode="json"))
    emit(callbacks, "on_start", result.config)
    try:
        result.data_validation = _gate(config, run_dir, result.notes, callbacks)
        configs = position_configs(config, run_dir)
        results = trainer(configs)
        failed = [f"position {i}: {r.error}" for i, r in enumerate(results) if r.status != "FINISHED"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(results)} tile positions failed; " + "; ".join(failed[:3]))
        result.epochs_run = max(r.epochs_run for r in results)
        result.notes.append(f"per-position: {len(results)} models, one per tile position")
        train_s = sum(float(r.metrics.get("time/train_s", 0.0)) for r in results)
        assemble_positions(config, [Path(str(r.checkpoint_path)) for r in results], result, callbacks, train_s)
        result.status = "FINISHED"
    except AdkdError as exc:
        result.status, result.error = "FAILED", str(exc)
        result.duration_s = time.perf_counter() - started
        emit(callbacks, "on_end", result)
        raise
    except Exception as exc:
        result.status, result.error = "FAILED", f"{type(exc).__name__}: {exc}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
    result.duration_s = time.perf_counter() - started
    emit(callbacks, "on_end", result)
    return result


def _gate(config: TrainConfig, run_dir: Path, notes: list[str], callbacks: Sequence[TrainCallback]) -> str:
    if config.skip_validation:
        notes.append("data validation skipped (skip_validation=true)")
        return "skipped"
    from adkd.pipelines.data.dataset import local_root
    from adkd.pipelines.data.validate import require_valid

    root = local_root(config.data)
    report = require_valid(
        root, [config.category], run_dir / "data_validation", data_docs=False, **config.data_gate.validate_kwargs()
    )
    path = run_dir / "data_validation.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    emit(callbacks, "on_artifact", path, "data_validation")
    return "passed"


def assemble_positions(
    config: TrainConfig,
    checkpoints: Sequence[Path],
    result: TrainResult,
    callbacks: Sequence[TrainCallback] = (),
    train_s: float = 0.0,
) -> None:
    """Put the position models into one model; thresholds, test metrics, model.pt and model.onnx into ``result``."""
    from adkd.pipelines.data.dataset import load_category, local_root
    from adkd.pipelines.train import checkpoint as ckpt
    from adkd.pipelines.train.outputs import finish_run, publish
    from adkd.pipelines.train.runtime import Runtime

    cfg = config
    run_dir = result.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    models = [ckpt.model_from_state(ckpt.read_checkpoint(p), source=f"checkpoint {p}")[0] for p in checkpoints]
    rt = Runtime.from_config(cfg)
    model = rt.place(PerPositionModel(models))
    data = load_category(
        local_root(cfg.data), cfg.category, image_size=cfg.data_size, val_fraction=cfg.val_fraction,
        seed=cfg.seed, resize=cfg.resize, image_level=cfg.data_gate.image_level,
    )  # fmt: skip
    scorer = eval_model(model, cfg)
    out = finish_run(scorer, data, rt, cfg, run_dir, result.notes, {"time/train_s": train_s})
    thresholds, source, metrics = out.thresholds, out.source, out.metrics
    result.thresholds, result.metrics = thresholds.to_dict(), metrics
    meta = {
        "category": cfg.category, "model": cfg.model, "backbone": cfg.backbone, "image_size": cfg.image_size,
        "crop_size": None, "eval_size": cfg.eval_size, "resize": cfg.resize, "epochs_run": result.epochs_run,
        "thresholds": thresholds.to_dict(), "threshold_source": source, "metrics": metrics,
        "data_validation": result.data_validation, "positions": [str(p) for p in checkpoints],
        **tiling_meta(cfg, data.train),
    }  # fmt: skip
    path = ckpt.save_checkpoint(run_dir / ckpt.MODEL, ckpt.checkpoint_dict(model.cpu(), cfg, meta))
    result.checkpoint_path = path
    emit(callbacks, "on_checkpoint", path, result.epochs_run)
    emit(callbacks, "on_artifact", path, "model")
    publish(out, result, callbacks)
