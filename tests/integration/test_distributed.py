"""Data-parallel training without Ray: two real processes on gloo (127.0.0.1), the real engine and model.

Each spawned rank runs the scenarios below in order and saves what it saw; the test asserts on both
ranks' reports. A rank that fails makes ``torch.multiprocessing.spawn`` stop the other and raise here.
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adkd.errors import ConfigError
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.train import engine, steps
from adkd.pipelines.train.callbacks import NullCallback, TrainResult
from adkd.pipelines.train.checkpoint import LAST, MODEL, read_checkpoint
from adkd.pipelines.train.distributed import DistContext, fingerprint, synced_state
from adkd.pipelines.train.presets import resolve_config

pytestmark = pytest.mark.timeout(600)

WORLD = 2
B = 2  # images per rank and step
N_TRAIN = 8  # after the 20 % validation split of 10


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(root: Path, out: Path, *extra: str) -> Any:
    overrides = ["epochs=2", f"batch_size={B}", f"out_dir={out}", "seed=5", "device=cpu", *extra]
    return resolve_config("rd", "cpu-smoke", "weave", str(root), overrides)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float((_flat(a) - _flat(b)).abs().max())


class Recorder(NullCallback):
    """What the engine told this rank."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_start(self, config: dict[str, Any]) -> None:
        self.events.append(("start", None))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append(("epoch", (epoch, metrics["train/loss"], metrics.get("val/loss"))))

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.events.append(("checkpoint", Path(path).name))

    def on_artifact(self, path: Path, kind: str) -> None:
        self.events.append(("artifact", kind))

    def on_end(self, result: TrainResult) -> None:
        self.events.append(("end", result.status))


class StopAfter(Recorder):
    """A crash right after epoch ``epoch``'s checkpoint, on every rank."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"stopped after epoch {epoch}")


# ------------------------------------------------------------------------------------- rank side


def _new_run(config: Any, d: DistContext) -> Any:
    result = TrainResult(config.category, config.model, "RUNNING", engine.run_dir_for(config))
    return engine._Run(config, [], result, None, d)


def _start_and_steps(root: Path, out: Path, d: DistContext) -> dict[str, Any]:
    """Identical start, disjoint shards, and one step = one step on the concatenated batch."""
    report: dict[str, Any] = {}
    # Plain SGD: its update is lr·gradient, so equal steps mean equal gradients. Adam's first update is
    # about lr·sign(g): blind to the gradient's scale and noisy where g ≈ 0.
    sgd = ("optimizer.name=sgd", "optimizer.lr=0.001", "optimizer.momentum=0.9")
    run = _new_run(_config(root, out / f"steps{d.rank}", *sgd), d)
    run._setup()
    params, buffers = synced_state(run.model)
    if d.rank == 1:  # a rank that starts elsewhere must be brought to rank 0's weights
        with torch.no_grad():
            for p in params:
                p.add_(0.25)
    starts = d.gather(_flat(params))
    report["start_differs"] = not torch.equal(starts[0], starts[1])
    run._sync_ranks()
    report["start_prints"] = d.gather(fingerprint(run.model))

    n = len(run.train_images)
    report["shards"] = {e: d.gather(run.epoch_indices(e).tolist()) for e in (0, 1, 10_000)}
    shards = [DistContext(r, WORLD).shard(n, run.config.seed, 0) for r in range(WORLD)]
    assert torch.equal(shards[d.rank], run.epoch_indices(0))
    rt, cfg = run.rt, run.config

    # 1) BatchNorm in eval: each image's loss depends on that image only, so the mean of the two rank
    #    means (equal sizes) is the mean over the 2B batch and the averaged gradient is its gradient.
    x = [rt.prepare(run.train_images[s[:B]]) for s in shards]
    ref = copy.deepcopy(run.model) if d.is_main else None
    initial = [p.detach().clone() for p in params]
    with steps.loss_mode(run.model):
        loss = steps.train_step(run.model, run.opts.optimizer, x[d.rank], rt, dist=d)
    grads = [p.grad.clone() for p in params]
    report["after_eval_step"] = d.gather(_flat(params))
    if d.is_main:
        ref_params, _ = synced_state(ref)
        ref_opt = steps.build_optimizer(ref, cfg)
        with steps.loss_mode(ref):
            ref_loss = steps.train_step(ref, ref_opt, torch.cat(x), rt)  # a single process, batch 2B
        report["eval_step"] = {
            "loss": (float(loss), float(ref_loss)),
            "grad_diff": _max_diff(grads, [p.grad for p in ref_params]),
            "grad_scale": float(_flat(grads).abs().max()),
            "param_diff": _max_diff(params, ref_params),
            "param_moved": _max_diff(params, initial),
        }

    # 2) BatchNorm in train mode normalises each rank's B images with their own statistics (per-device
    #    BN, as in DDP without SyncBatchNorm): the step equals a single process averaging the losses of
    #    the two B-image halves, not a 2B forward pass. Running statistics differ until the epoch's sync.
    x = [rt.prepare(run.train_images[s[B : 2 * B]]) for s in shards]
    if d.is_main:
        ref = copy.deepcopy(run.model)
        ref_opt = steps.build_optimizer(ref, cfg)
        ref_opt.load_state_dict(copy.deepcopy(run.opts.optimizer.state_dict()))  # else it shares the momentum buffers
    run.model.train()
    steps.train_step(run.model, run.opts.optimizer, x[d.rank], rt, dist=d)
    report["after_train_step"] = d.gather(_flat(params))
    if d.is_main:
        ref.train()
        ref_opt.zero_grad(set_to_none=True)
        halves = [ref.loss(ref(half)) for half in x]
        (sum(halves) / len(halves)).backward()
        ref_opt.step()
        report["train_step_param_diff"] = _max_diff(params, synced_state(ref)[0])

    # 3) A whole epoch leaves every rank with the same parameters and BatchNorm statistics.
    loss, seen = run._epoch(1, run.opts.optimizer, pretrain=False)
    report["epoch"] = (loss, seen)
    report["epoch_state"] = d.gather(_flat(params + buffers))
    return report


def _engine_runs(root: Path, out: Path, d: DistContext) -> dict[str, Any]:
    """train_category on both ranks: straight, crashed after epoch 1, resumed; and a one-rank setup error."""
    report: dict[str, Any] = {}
    straight = Recorder()
    result = engine.train_category(_config(root, out / "straight" / f"rank{d.rank}"), [straight])
    report["straight"] = (result.status, result.error, straight.events, result.checkpoint_path, result.metrics)

    resumed_config = _config(root, out / "resumed" / f"rank{d.rank}")
    stopper = StopAfter(1)
    stopped = engine.train_category(resumed_config, [stopper])
    report["stopped"] = (stopped.status, stopped.error)
    if d.rank != 0:  # what adkd.platform.cluster.worker.category_worker does: every rank gets the same last.pt
        source = engine.run_dir_for(_config(root, out / "resumed" / "rank0")) / LAST
        stopped.run_dir.mkdir(parents=True, exist_ok=True)  # rank 1 wrote nothing, not even its folder
        shutil.copy2(source, stopped.run_dir / LAST)
    resumed = engine.train_category(resumed_config, [Recorder()], resume_from=stopped.run_dir / LAST)
    report["resumed"] = (resumed.status, resumed.error, resumed.notes, resumed.checkpoint_path)

    bad_root = root if d.rank == 0 else root / "missing"
    try:
        engine.train_category(_config(bad_root, out / "bad" / f"rank{d.rank}"))
        report["bad"] = None
    except ConfigError as exc:
        report["bad"] = str(exc)
    return report


def _rank_main(rank: int, port: int, root: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=300)
    )
    try:
        d = DistContext.detect()
        assert (d.rank, d.world_size) == (rank, WORLD)
        report = {"rank": rank}
        report.update(_start_and_steps(Path(root), Path(out), d))
        report.update(_engine_runs(Path(root), Path(out), d))
        (Path(out) / f"report{rank}.pkl").write_bytes(pickle.dumps(report))
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------- test side


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp")
    synthesize(tmp / "data", ["weave"], size=64, n_train=10, n_test=6, seed=0)
    out = tmp / "out"
    out.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), str(tmp / "data"), str(out)), nprocs=WORLD, join=True)
    loaded = [pickle.loads((out / f"report{r}.pkl").read_bytes()) for r in range(WORLD)]
    for report in loaded:
        report["out"] = out
    return loaded


def test_ranks_start_identical_and_train_disjoint_shards(reports: list[dict[str, Any]]) -> None:
    main = reports[0]
    assert main["start_differs"], "the perturbed rank should have started from other weights"
    assert main["start_prints"][0] == main["start_prints"][1]  # after the broadcast: teacher and student
    for epoch, (shard0, shard1) in main["shards"].items():
        assert len(shard0) == len(shard1) == N_TRAIN // WORLD, epoch
        assert not set(shard0) & set(shard1), epoch
        assert set(shard0) | set(shard1) == set(range(N_TRAIN)), epoch
    assert main["shards"][0] != main["shards"][1]  # reshuffled every epoch


def test_one_two_rank_step_equals_one_step_on_the_whole_batch(reports: list[dict[str, Any]]) -> None:
    main = reports[0]
    step = main["eval_step"]
    assert step["loss"][0] == pytest.approx(step["loss"][1], rel=1e-5)
    assert step["grad_diff"] <= 1e-5 * step["grad_scale"], step
    assert step["param_moved"] > 1e-5, step  # the step changed the weights
    assert step["param_diff"] <= 1e-4 * step["param_moved"], step
    assert main["train_step_param_diff"] <= 1e-4 * step["param_moved"], main["train_step_param_diff"]
    for key in ("after_eval_step", "after_train_step", "epoch_state"):
        assert torch.equal(main[key][0], main[key][1]), f"{key}: the ranks hold different weights"


def test_only_rank_zero_writes_and_every_rank_reports_the_same_losses(reports: list[dict[str, Any]]) -> None:
    out = reports[0]["out"]
    status0, error0, events0, checkpoint0, metrics0 = reports[0]["straight"]
    status1, error1, events1, checkpoint1, metrics1 = reports[1]["straight"]
    assert status0 == status1 == "FINISHED", (error0, error1)
    written = {p.name for p in (out / "straight" / "rank0").rglob("*") if p.is_file()}
    assert {"config.json", LAST, MODEL, "metrics.json", "history.json", "scores.csv"} <= written
    assert not [p for p in (out / "straight" / "rank1").rglob("*") if p.is_file()]
    assert checkpoint0 is not None and Path(checkpoint0).name == MODEL and checkpoint1 is None
    assert "test/image_auroc" in metrics0 and not metrics1
    epochs0 = [e for k, e in events0 if k == "epoch"]
    assert [e[0] for e in epochs0] == [1, 2]
    assert epochs0 == [e for k, e in events1 if k == "epoch"]  # the mean over ranks, on every rank
    assert ("checkpoint", LAST) in events0 and ("artifact", "model") in events0
    assert [k for k, _ in events1] == ["start", "epoch", "epoch", "end"]
    history = read_checkpoint(out / "straight" / "rank0" / "rd" / "weave" / MODEL)["meta"]["history"]
    assert [h["train/loss"] for h in history] == [e[1] for e in epochs0]


def test_two_rank_resume_ends_bit_identical(reports: list[dict[str, Any]]) -> None:
    out = reports[0]["out"]
    for report in reports:
        assert report["stopped"][0] == "FAILED" and "stopped after epoch 1" in report["stopped"][1]
        status, error, notes, _ = report["resumed"]
        assert status == "FINISHED", error
        assert any("resumed from" in n for n in notes)
        assert not any("random streams start afresh" in n for n in notes)
    loop = read_checkpoint(out / "resumed" / "rank0" / "rd" / "weave" / LAST)["train_state"]
    assert len(loop["rng_by_rank"]) == WORLD
    straight = read_checkpoint(out / "straight" / "rank0" / "rd" / "weave" / MODEL)
    resumed = read_checkpoint(out / "resumed" / "rank0" / "rd" / "weave" / MODEL)
    changed = [k for k, v in straight["model_state"].items() if not torch.equal(v, resumed["model_state"][k])]
    assert not changed, f"weights differ after resume: {changed[:5]}"


def test_a_setup_error_on_one_rank_ends_every_rank(reports: list[dict[str, Any]]) -> None:
    assert reports[1]["bad"] is not None and "does not exist" in reports[1]["bad"]
    assert reports[0]["bad"] == reports[1]["bad"]  # rank 0 had good data but stops with rank 1's error
