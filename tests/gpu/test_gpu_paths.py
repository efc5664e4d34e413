"""GPU paths, run wherever CUDA is (skipped cleanly on CPU): bf16 autocast, channels-last, NCCL, fractional GPUs.

bf16 and channels-last are on by default on CUDA (``amp``/``channels_last`` None), so these tests hold the
defaults against fp32 / contiguous runs of the same model on the same GPU.
"""

from __future__ import annotations

import copy
import os
import pickle
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from adkd.pipelines.data.synthetic_dataset import synthesize
from tests.gpu.run_record import ran_on_cuda_with_the_defaults

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.timeout(900),
]

SIZE = 128
METRIC_TOLERANCE = 0.005
CATEGORIES = ("weave", "grain", "dots", "disc")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpu") / "data"
    synthesize(path, list(CATEGORIES), size=SIZE, n_train=32, n_test=40, seed=0)
    return path


def _config(model: str, root: Path, out: Path, *extra: str, category: str = "weave") -> Any:
    from adkd.pipelines.train.presets import resolve_config

    overrides = [f"image_size={SIZE}", "epochs=4", f"out_dir={out}", "device=cuda", "skip_validation=true", *extra]
    return resolve_config(model, "cpu-smoke", category, str(root), overrides)


@pytest.fixture(scope="module")
def trained(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An rd model trained on the GPU with the defaults there (bf16 autocast, channels-last)."""
    from adkd.pipelines.data.dataset import load_category
    from adkd.pipelines.train.checkpoint import load_model_from_checkpoint
    from adkd.pipelines.train.engine import train_category
    from adkd.pipelines.train.runtime import Runtime

    # null: the device's defaults, not the cpu-smoke preset's fp32 pin
    config = _config("rd", root, tmp_path_factory.mktemp("runs"), "amp=null", "channels_last=null")
    torch.cuda.reset_peak_memory_stats()
    result = train_category(config)
    peak_bytes = torch.cuda.max_memory_allocated()
    assert result.status == "FINISHED", result.error
    rt = Runtime.from_config(config)
    assert (rt.device.type, rt.amp, rt.channels_last) == ("cuda", True, True)
    model, _, _ = load_model_from_checkpoint(result.checkpoint_path)
    data = load_category(root, "weave", image_size=SIZE, val_fraction=0.2, seed=config.seed)
    return {"result": result, "model": model, "data": data, "config": config, "peak_bytes": peak_bytes}


def _runtime(amp: bool, channels_last: bool) -> Any:
    from adkd.pipelines.train.runtime import Runtime

    return Runtime(torch.device("cuda"), amp=amp, channels_last=channels_last)


def _evaluate(model: torch.nn.Module, data: Any, amp: bool, channels_last: bool) -> tuple[Any, dict[str, float]]:
    from adkd.pipelines.evaluate.metrics import compute_metrics
    from adkd.pipelines.inference.torch_scoring import predict

    rt = _runtime(amp, channels_last)
    maps, scores = predict(rt.place(copy.deepcopy(model)), data.test, rt, batch_size=16)
    return maps, compute_metrics(maps, scores, data.test_masks, data.test_labels)


def _no_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def test_training_ran_on_the_gpu(trained: dict[str, Any]) -> None:
    result = trained["result"]
    assert ran_on_cuda_with_the_defaults(result.notes, trained["peak_bytes"]), (result.notes, trained["peak_bytes"])
    assert result.epochs_run == result.config["epochs"]


def test_bf16_evaluation_matches_fp32(trained: dict[str, Any]) -> None:
    _no_tf32()
    _, fp32 = _evaluate(trained["model"], trained["data"], amp=False, channels_last=False)
    _, bf16 = _evaluate(trained["model"], trained["data"], amp=True, channels_last=False)
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert abs(bf16[key] - fp32[key]) <= METRIC_TOLERANCE, (key, fp32, bf16)


def test_channels_last_matches_contiguous(trained: dict[str, Any]) -> None:
    _no_tf32()
    maps_a, plain = _evaluate(trained["model"], trained["data"], amp=False, channels_last=False)
    maps_b, cl = _evaluate(trained["model"], trained["data"], amp=False, channels_last=True)
    span = float(maps_a.max() - maps_a.min())
    assert float((maps_a - maps_b).abs().max()) <= 1e-3 * span
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert abs(cl[key] - plain[key]) <= METRIC_TOLERANCE, (key, plain, cl)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_training_step_follows_fp32(trained: dict[str, Any], channels_last: bool) -> None:
    from adkd.pipelines.train.steps import build_optimizer, loss_mode, train_step

    _no_tf32()
    config, data = trained["config"], trained["data"]
    losses, moved = {}, {}
    for amp in (False, True):
        rt = _runtime(amp, channels_last)
        model = rt.place(copy.deepcopy(trained["model"]))
        optimizer = build_optimizer(model, config)
        before = [p.detach().clone() for p in model.trainable_parameters()]
        with loss_mode(model):  # BatchNorm frozen: both precisions see the same statistics
            losses[amp] = float(train_step(model, optimizer, rt.prepare(data.train[:8].cuda()), rt))
        after = list(model.trainable_parameters())
        assert all(torch.isfinite(p).all() for p in after)
        moved[amp] = max(float((a - b).abs().max()) for a, b in zip(after, before))
    assert losses[True] == pytest.approx(losses[False], rel=0.02), losses
    assert moved[True] > 0 and moved[False] > 0


# --------------------------------------------------------------------------- 2-rank NCCL


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nccl_rank(rank: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    from adkd.pipelines.train import engine, steps
    from adkd.pipelines.train.callbacks import TrainResult
    from adkd.pipelines.train.distributed import DistContext, synced_state

    torch.cuda.set_device(rank)
    _no_tf32()
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=300)
    )
    try:
        d = DistContext.detect()
        sgd = ("optimizer.name=sgd", "optimizer.lr=0.001", "amp=false", "channels_last=false")
        config = _config("rd", Path(root), Path(out) / f"rank{rank}", *sgd)
        result = TrainResult(config.category, config.model, "RUNNING", engine.run_dir_for(config))
        run = engine._Run(config, [], result, None, d)
        run._setup()
        run._sync_ranks()
        params, _ = synced_state(run.model)
        shards = [DistContext(r, 2).shard(len(run.train_images), config.seed, 0) for r in range(2)]
        x = [run.rt.prepare(run.train_images[s[:4].to(run.rt.device)]) for s in shards]
        ref = copy.deepcopy(run.model) if d.is_main else None
        with steps.loss_mode(run.model):
            loss = steps.train_step(run.model, run.opts.optimizer, x[d.rank], run.rt, dist=d)
        report: dict[str, Any] = {"params": d.gather(torch.cat([p.detach().flatten().cpu() for p in params]))}
        if d.is_main:
            ref_params, _ = synced_state(ref)
            initial = torch.cat([p.detach().flatten().cpu() for p in ref_params])
            with steps.loss_mode(ref):
                ref_loss = steps.train_step(ref, steps.build_optimizer(ref, config), torch.cat(x), run.rt)
            report.update(
                loss=(float(loss), float(ref_loss)),
                reference=torch.cat([p.detach().flatten().cpu() for p in ref_params]),
                initial=initial,
            )
        (Path(out) / f"report{rank}.pkl").write_bytes(pickle.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data parallel needs 2 GPUs (one rank per GPU)")
def test_two_rank_nccl_step_equals_one_process_on_the_concatenated_batch(root: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_nccl_rank, args=(_free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    main = pickle.loads((tmp_path / "report0.pkl").read_bytes())
    assert torch.equal(main["params"][0], main["params"][1]), "the ranks hold different weights"
    assert main["loss"][0] == pytest.approx(main["loss"][1], rel=1e-4)
    moved = float((main["reference"] - main["initial"]).abs().max())
    assert moved > 0
    assert float((main["params"][0] - main["reference"]).abs().max()) <= 1e-3 * moved


# --------------------------------------------------------------------------- fractional GPUs


def test_four_categories_share_one_gpu_at_a_quarter_each(root: Path, tmp_path: Path) -> None:
    import ray

    from adkd.platform.cluster.driver import RayRunOptions, run_all_categories
    from adkd.platform.cluster.listeners import RunListener
    from adkd.platform.cluster.resources import CategoryResources

    assert not ray.is_initialized()  # tests/conftest.py ends any Ray a module leaves running
    configs = [_config("stfpm", root, tmp_path / "runs", "epochs=3", category=c) for c in CATEGORIES]
    seen: dict[str, list[float]] = {}

    class Clock(RunListener):
        def event(self, event: dict[str, Any]) -> None:
            seen.setdefault(event["category"], []).append(time.monotonic())

    try:
        outcome = run_all_categories(
            configs,
            RayRunOptions(
                resources=CategoryResources(cpus=1, gpus=0.25),
                num_cpus=max(4, os.cpu_count() or 4),
                num_gpus=1,
                runs_dir=tmp_path / "runs",
            ),
            [Clock()],
        )
    finally:
        ray.shutdown()
    assert not outcome.failed, [(r.category, r.error) for r in outcome.results]
    assert sorted(r.category for r in outcome.results) == sorted(CATEGORIES)
    # At once: every category had started before any had finished.
    assert max(t[0] for t in seen.values()) < min(t[-1] for t in seen.values()), seen
