"""Per-position tiling: one model per tile position, trained as one job per position, assembled into one model.

``tiling.mode=per_position`` (aligned parts: PCBs, labels) trains an ordinary run on each position's tiles
(``tiling.position`` set; it writes ``model.pt`` only), then ``assemble_positions`` puts the position models
into one ``PerPositionModel`` and finishes it like any run: exported, thresholds fitted and the test split
scored through the exported file, ``model.pt`` written. ``sequential_trainer`` runs the jobs one after another
in this process; ``adkd.platform.cluster.positions`` runs them at once on Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from adkd.errors import ConfigError
from adkd.pipelines.tiling.grid import TileGrid
from adkd.pipelines.tiling.model import PerPositionModel
from adkd.pipelines.train.callbacks import NullCallback, TrainCallback, TrainResult, emit, reported_run
from adkd.pipelines.train.config import TrainConfig
from adkd.pipelines.train.tiled import eval_model

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
    relays them), the assembled model's artifacts and its end. Errors behave as in ``train_category``. The
    backbone and model options are resolved once, here (``TrainConfig.resolved``): the position jobs, the
    assembled ``model.pt`` and the result carry the same ones.
    """
    from adkd.pipelines.data.dataset import local_root
    from adkd.pipelines.train.run_setup import data_gate, run_dir_for

    def run(result: TrainResult) -> None:
        cfg = config.resolved()
        result.config = cfg.model_dump(mode="json")
        run_dir = result.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        result.data_validation = data_gate(cfg, local_root(cfg.data), run_dir, callbacks, result.notes)
        results = trainer(position_configs(cfg, run_dir))
        result.notes.extend(getattr(trainer, "notes", []))
        failed = [f"position {i}: {r.error}" for i, r in enumerate(results) if r.status != "FINISHED"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(results)} tile positions failed; " + "; ".join(failed[:3]))
        result.epochs_run = max(r.epochs_run for r in results)
        result.notes.append(f"per-position: {len(results)} models, one per tile position")
        train_s = sum(float(r.metrics.get("time/train_s", 0.0)) for r in results)
        assemble_positions(cfg, [Path(str(r.checkpoint_path)) for r in results], result, callbacks, train_s)

    return reported_run(config, run_dir_for(config), callbacks, run)


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
    from adkd.pipelines.train.run_setup import run_meta

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
    meta = run_meta(
        cfg, data.train, epochs_run=result.epochs_run, thresholds=out.thresholds.to_dict(), threshold_source=out.source,
        metrics=out.metrics, data_validation=result.data_validation, positions=[str(p) for p in checkpoints],
        normal_scores={"source": out.source, "quantile": cfg.threshold_quantile, "scores": out.normal_scores},
    )  # fmt: skip
    path = ckpt.save_checkpoint(run_dir / ckpt.MODEL, ckpt.checkpoint_dict(model.cpu(), cfg, meta))
    result.checkpoint_path = path
    emit(callbacks, "on_checkpoint", path, result.epochs_run)
    emit(callbacks, "on_artifact", path, "model")
    publish(out, result, callbacks)
