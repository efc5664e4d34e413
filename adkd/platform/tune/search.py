"""`adkd tune`: Ray Tune over each model's own knobs (see tune_space), scored without test labels.

Each trial trains one configuration and, after every epoch, scores it on the held-out normal images
(carved from train/good) painted with synthetic defects. ASHA stops weak trials early. Only the best
trial is then evaluated on the test split, which never influences the choice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.config import TrainConfig
from adkd.platform.tune.space import (  # noqa: F401 (re-exported: the CLI and tests import them from here)
    DEFAULT_SPACES,
    PARAM_TARGETS,
    TUNABLE_MODELS,
    apply_params,
    default_point,
    parse_space,
    set_line,
    to_ray_space,
)

OBJECTIVES = ("pixel_auroc", "image_auroc", "aupro")


def is_point(config: dict[str, Any], point: dict[str, float] | None) -> bool:
    """Whether a trial's config holds exactly ``point``'s values (the preset's trial)."""
    return point is not None and all(float(config.get(k, math.nan)) == v for k, v in point.items())


class ValidationObjective(NullCallback):
    """After each epoch: score the model on validation images with synthetic defects, report to Tune."""

    def __init__(self, objective: str, seed: int, last_epoch: int) -> None:
        self.objective = objective
        self.seed = seed
        self.last_epoch = last_epoch
        self.final: dict[str, float] | None = None
        self._labelled: Any = None

    def on_epoch_model(self, epoch: int, model: Any, runtime: Any, data: Any, config: TrainConfig) -> dict[str, float]:
        from adkd.pipelines.data.synthetic_defects import with_synthetic_defects
        from adkd.pipelines.evaluate.metrics import compute_metrics
        from adkd.pipelines.inference.torch_scoring import predict

        if self._labelled is None:
            if len(data.val) == 0:
                raise ConfigError("adkd tune needs validation images: set val_fraction > 0")
            self._labelled = with_synthetic_defects(data.val, seed=self.seed)
        labelled = self._labelled
        maps, scores = predict(model, labelled.images, runtime, config.eval_batch_size)
        raw = compute_metrics(maps, scores, labelled.masks, labelled.labels)
        return {f"val/{k}": float(v) for k, v in raw.items()}

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        from ray import tune

        if f"val/{self.objective}" not in metrics:
            return  # stfpm-ae's autoencoder pretraining epochs: nothing to score yet
        value = metrics[f"val/{self.objective}"]
        report = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        report.update({"objective": value if math.isfinite(value) else 0.0, "epoch": epoch})
        if epoch >= self.last_epoch:
            # ASHA ends a trial as soon as it reports max_t: hold the last report until model.pt is written.
            self.final = report
            return
        tune.report(report)


def trial_main(params: dict[str, float], base: dict[str, Any], objective: str, trials_dir: str) -> None:
    """One trial, run by Ray Tune in a worker: train with the trial's parameters, report every epoch."""
    from ray import tune

    from adkd.pipelines.train.engine import train_category

    trial_dir = Path(trials_dir) / tune.get_context().get_trial_id()
    values = apply_params(base, params)
    values["out_dir"] = str(trial_dir)
    values["evaluate_test"] = False
    values["export_onnx"] = values["export_int8"] = False  # a trial's model is not shipped
    config = TrainConfig.model_validate(values)
    last_epoch = config.total_epochs
    reporter = ValidationObjective(objective, seed=config.seed + 1, last_epoch=last_epoch)
    result = train_category(config, [reporter])
    if result.status != "FINISHED":
        raise RuntimeError(f"trial failed: {result.error}")
    (trial_dir / "trial_result.json").write_text(json.dumps(result.to_dict(), default=str))
    if reporter.final is not None:
        tune.report(reporter.final)


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, float]
    objective: float
    epochs: int
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    is_default: bool = False  # the base config's own values, evaluated first for comparison


@dataclass
class TuneSummary:
    category: str
    model: str
    objective: str
    trials: list[TrialRow]
    best: TrialRow
    best_test_metrics: dict[str, float]
    best_config: dict[str, Any]
    out_dir: Path
    duration_s: float
    registered_version: str | None = None

    @property
    def default(self) -> TrialRow | None:
        """The trial that ran the base config's own values, if it was evaluated."""
        return next((t for t in self.trials if t.is_default), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "model": self.model,
            "objective": self.objective,
            "best": self.best.__dict__,
            "best_test_metrics": self.best_test_metrics,
            "best_set_line": set_line(self.best.params),
            "trials": [t.__dict__ for t in self.trials],
            "default": self.default.__dict__ if self.default else None,
            "duration_s": self.duration_s,
            "registered_version": self.registered_version,
        }


def _rows(results: Any, params: list[str], trials_dir: Path, default: dict[str, float] | None = None) -> list[TrialRow]:
    rows = []
    default_seen = False
    for res in results:
        df = res.metrics_dataframe
        history = [] if df is None else df.to_dict("records")
        # The last epoch's score: that is the model the trial keeps (a max over epochs would credit a
        # trial with an epoch whose weights are gone).
        scores = df["objective"].dropna() if df is not None and "objective" in df else []
        objective = float(scores.iloc[-1]) if len(scores) else float("nan")
        trial_id = str((res.metrics or {}).get("trial_id") or Path(res.path).name)
        trial_dir = trials_dir / trial_id
        model_pt = next(iter(sorted(trial_dir.rglob("model.pt"))), None) if trial_dir.is_dir() else None
        values = {p: float(res.config[p]) for p in params}
        is_default = not default_seen and is_point(values, default)
        default_seen = default_seen or is_default
        rows.append(
            TrialRow(
                trial_id=trial_id,
                params=values,
                objective=objective,
                epochs=len(history),
                status="ERROR" if res.error else "TERMINATED",
                history=[{k: v for k, v in h.items() if isinstance(v, int | float)} for h in history],
                checkpoint=str(model_pt) if model_pt else None,
                is_default=is_default,
            )
        )
    return sorted(rows, key=lambda r: -r.objective if math.isfinite(r.objective) else math.inf)


def _preset_keeping_asha() -> type:
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class PresetKeepingASHA(ASHAScheduler):
        """ASHA that never stops the trial running the preset's own values: it is the yardstick."""

        def __init__(self, preset: dict[str, float] | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._preset = preset

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if (
                decision == TrialScheduler.STOP
                and is_point(trial.config, self._preset)
                and result.get("epoch", 0) < self._max_t
            ):
                return TrialScheduler.CONTINUE
            return decision

    return PresetKeepingASHA


def run_tune(
    base: TrainConfig,
    *,
    num_samples: int = 8,
    max_concurrent: int | None = None,
    epochs: int | None = None,
    search: str = "random",
    objective: str = "pixel_auroc",
    space: dict[str, tuple[str, float, float]] | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    out_dir: Path = Path("adkd-runs/tune"),
    grace_period: int | None = None,
    sink: Any = None,
    include_default: bool = True,
) -> TuneSummary:
    """Run the search on the connected Ray; the caller connects Ray and supplies an MLflow sink.

    With ``include_default`` the base config's own λ/α (when inside the space) is the first of the
    ``num_samples`` trials, so the table shows what tuning gained over the preset on the same objective.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    PresetKeepingASHA = _preset_keeping_asha()  # built lazily: importing adkd must not import Ray

    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {objective}: choose one of {', '.join(OBJECTIVES)}")
    if base.val_fraction <= 0:
        raise ConfigError("adkd tune scores trials on validation images: set val_fraction > 0 (e.g. 0.2)")
    space = space or parse_space(base.model, model_options=base.model_options)
    values = base.model_dump(mode="json")
    if epochs is not None:
        values["epochs"] = epochs
    max_t = max(base.model_copy(update={"epochs": int(values["epochs"])}).total_epochs, 1)
    started = time.perf_counter()

    default = default_point(values, space) if include_default else None
    points = [default] if default else None
    if search == "bayes":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=base.seed, points_to_evaluate=points)
    elif search == "random":
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(
            points_to_evaluate=points, random_state=base.seed, max_concurrent=max_concurrent or 0
        )
    else:
        raise ConfigError(f"--search {search}: choose random or bayes")
    if search == "bayes" and max_concurrent:
        search_alg = ConcurrencyLimiter(search_alg, max_concurrent=max_concurrent)

    out_dir = out_dir.resolve()
    name = f"{base.model}-{base.category}-{time.strftime('%Y%m%d-%H%M%S')}"
    trials_dir = out_dir / name / "trials"
    trainable = tune.with_parameters(trial_main, base=values, objective=objective, trials_dir=str(trials_dir))
    # Each trial trains in one worker (one Ray actor) with these resources.
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_worker, "gpu": gpus_per_worker})
    # Early epochs are noisy (mrkd on bottle: pixel AUROC 87.8 after 3 epochs, 87.5 after 5, 98.6 after 10),
    # so by default ASHA judges a trial only after a quarter of its epochs.
    grace = min(grace_period or max(1, max_t // 4), max_t)
    scheduler = PresetKeepingASHA(default, time_attr="epoch", max_t=max_t, grace_period=grace, reduction_factor=2)
    tuner = tune.Tuner(
        trainable,
        param_space=to_ray_space(space),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="max",
            num_samples=num_samples,
            scheduler=scheduler,
            search_alg=search_alg,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out_dir),
            verbose=0,
        ),
    )
    from adkd.platform.console.quiet import dropping_prints

    with dropping_prints():  # Ray Tune's own "results are in <its temp folder>" lines
        results = tuner.fit()
    rows = _rows(results, list(space), trials_dir, default)
    # Trials ASHA stopped early have no final model (and were judged weak): pick among completed ones.
    finished = [r for r in rows if math.isfinite(r.objective) and r.checkpoint] or [
        r for r in rows if math.isfinite(r.objective)
    ]
    if not finished:
        errors = [str(res.error) for res in results if res.error][:3]
        raise ConfigError(f"no trial of {base.model}/{base.category} finished an epoch: {' | '.join(errors)}")
    best = finished[0]
    best_config = apply_params(values, best.params)

    test_metrics: dict[str, float] = {}
    if best.checkpoint:
        from adkd.pipelines.train.artifacts import evaluate_checkpoint

        test_metrics = evaluate_checkpoint(
            best.checkpoint, base.data, base.category, out_dir=Path(best.checkpoint).parent / "test-evaluation"
        )
    summary = TuneSummary(
        category=base.category,
        model=base.model,
        objective=objective,
        trials=rows,
        best=best,
        best_test_metrics=test_metrics,
        best_config=best_config,
        out_dir=out_dir,
        duration_s=time.perf_counter() - started,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{base.model}-{base.category}-tune.json").write_text(
        json.dumps(summary.to_dict(), indent=2, default=str)
    )
    return summary


def result_from_best(summary: TuneSummary) -> TrainResult | None:
    """A TrainResult for the best trial, for registering it like any trained model."""
    if not summary.best.checkpoint:
        return None
    from adkd.pipelines.data.fingerprint import data_fingerprint
    from adkd.pipelines.train.artifacts import export_checkpoint

    ckpt = Path(summary.best.checkpoint)
    data = summary.best_config.get("data")
    # The trial's own export when its run wrote one; else the best trial alone is exported here.
    onnx = ckpt.with_suffix(".onnx") if ckpt.with_suffix(".onnx").is_file() else export_checkpoint(ckpt)
    return TrainResult(
        category=summary.category,
        model=summary.model,
        status="FINISHED",
        run_dir=ckpt.parent,
        metrics=summary.best_test_metrics,
        checkpoint_path=ckpt,
        epochs_run=summary.best.epochs,
        config=summary.best_config,
        onnx_path=onnx,
        data_fingerprint=data_fingerprint(data, summary.category) if data else "",
    )


def log_to_mlflow(session: Any, summary: TuneSummary) -> None:
    """A child run per trial under the session's parent run, all written from this (the driver) process.

    The best trial's run is a full category run (test metrics, ONNX model, artifacts; registered when the
    session registers); the others carry their parameters, per-epoch metrics and objective.
    """
    from mlflow.entities import Metric, Param

    from adkd.platform.tracking.redaction import redact
    from adkd.platform.tracking.values import flatten

    client = session.client
    best = summary.best
    best_result = result_from_best(summary)
    for trial in summary.trials:
        tuned = {"tune": trial.params, "tune_trial": trial.trial_id, "tune_preset_values": trial.is_default}
        if trial is best and best_result is not None:
            tracker = session.child(summary.category)
            tracker.on_start(summary.best_config | tuned | {"tune_best": True})
            for row in trial.history:
                tracker.on_epoch_end(int(row.get("epoch", 0)), row)
            best_result.metrics = {**summary.best_test_metrics, "val/objective": trial.objective}
            tracker.on_end(best_result)
            continue
        tags = {
            "mlflow.parentRunId": session.parent_run_id,
            "mlflow.runName": f"trial-{trial.trial_id}",
            "category": summary.category,
            "model": summary.model,
            "tune.status": trial.status,
        }
        params = redact(flatten(apply_params(summary.best_config, trial.params) | tuned))

        def create_and_log(trial: TrialRow = trial, tags: dict = tags, params: dict = params) -> None:
            run_id = client.create_run(session.experiment_id, tags=tags).info.run_id
            items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
            for start in range(0, len(items), 100):
                client.log_batch(run_id, params=items[start : start + 100])
            now = int(time.time() * 1000)
            metrics = [
                Metric(k, float(v), now, int(row.get("epoch", i)))
                for i, row in enumerate(trial.history)
                for k, v in row.items()
                if (k.startswith(("val/", "train/")) or k == "objective") and math.isfinite(float(v))
            ]
            for start in range(0, len(metrics), 500):
                client.log_batch(run_id, metrics=metrics[start : start + 500])
            client.set_terminated(run_id, "FINISHED" if trial.status == "TERMINATED" else "FAILED")

        session.writer.submit(f"trial run {trial.trial_id}", create_and_log)
