"""Per-position tiling: one model per tile position, trained as one job per position, assembled into one model.

``tiling.mode=per_position`` (aligned parts: PCBs, labels) trains an ordinary run on each position's tiles
(``tiling.position`` set; it writes ``model.pt`` only), then ``assemble_positions`` puts the position models
into one ``PerPositionModel`` and finishes it like any run: exported, thresholds fitted and the test split
scored through the exported file, ``model.pt`` written. ``sequential_trainer`` runs the jobs one after another
in this process; ``adkd.platform.cluster.positions`` runs them at once on Ray.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from adkd.errors import AdkdError, ConfigError
from adkd.pipelines.tiling.grid import TileGrid
from adkd.pipelines.tiling.model import PerPositionModel
from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult, emit
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.tiled import eval_model, tiling_meta

PositionTrainer = Callable[[list[TrainConfig]], list[TrainResult]]


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


class PositionRelay(NullCallback):
    """A position job's epoch metrics passed on under ``posNNN/`` (the assembled run logs every position)."""

    def __init__(self, callbacks: Sequence[TrainCallback], position: int) -> None:
        self.callbacks, self.prefix = callbacks, f"pos{position:03d}/"

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        emit(self.callbacks, "on_epoch_end", epoch, {self.prefix + k: v for k, v in metrics.items()})


def sequential_trainer(train_one: Callable[..., TrainResult], callbacks: Sequence[TrainCallback]) -> PositionTrainer:
    """The position jobs one after another in this process, their epochs relayed to ``callbacks``."""

    def run(configs: list[TrainConfig]) -> list[TrainResult]:
        return [train_one(c, [PositionRelay(callbacks, p)]) for p, c in enumerate(configs)]

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
        result.notes.extend(getattr(trainer, "notes", []))
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
    """The position models as one model, finished like a run (export, thresholds, test metrics, model.pt)."""
    from adkd.pipelines.data.dataset import load_category, local_root
    from adkd.pipelines.inference.runtime import Runtime
    from adkd.pipelines.train import checkpoint as ckpt
    from adkd.pipelines.train.outputs import finish_run, publish

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
    out = finish_run(eval_model(model, cfg), data, rt, cfg, run_dir, result.notes, {"time/train_s": train_s})
    result.thresholds, result.metrics = out.thresholds.to_dict(), out.metrics
    meta = {
        "category": cfg.category, "model": cfg.model, "backbone": cfg.backbone, "image_size": cfg.image_size,
        "crop_size": None, "eval_size": cfg.eval_size, "resize": cfg.resize, "epochs_run": result.epochs_run,
        "thresholds": out.thresholds.to_dict(), "threshold_source": out.source, "metrics": out.metrics,
        "normal_scores": {"source": out.source, "quantile": cfg.threshold_quantile, "scores": out.normal_scores},
        "data_validation": result.data_validation, "positions": [str(p) for p in checkpoints],
        **tiling_meta(cfg, data.train),
    }  # fmt: skip
    path = ckpt.save_checkpoint(run_dir / ckpt.MODEL, ckpt.checkpoint_dict(model.cpu(), cfg, meta))
    result.checkpoint_path = path
    emit(callbacks, "on_checkpoint", path, result.epochs_run)
    emit(callbacks, "on_artifact", path, "model")
    publish(out, result, callbacks)
