"""What one run asks Ray for: bad ones are refused with a message naming the setting, not a flag."""

from __future__ import annotations

import pytest

from adkd.errors import ConfigError
from adkd.platform.cluster.driver import RayRunOptions
from adkd.platform.cluster.resources import CategoryResources, check_distributed, check_fits, resources_for


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"workers": 0}, "workers per run must be >= 1, got 0"),
        ({"cpus": 0}, "cpus per worker must be > 0, got 0"),
        ({"gpus": -1}, "gpus per worker must be >= 0, got -1"),
        ({"gpus": 1.5}, "gpus per worker above 1 must be a whole number, got 1.5"),
    ],
)
def test_bad_requests_name_the_setting_and_no_flag(kwargs: dict[str, float], text: str) -> None:
    with pytest.raises(ConfigError) as info:
        CategoryResources(**kwargs)  # type: ignore[arg-type]
    assert text in str(info.value)
    assert "--" not in str(info.value)


def test_per_worker_asks_ray_for_cpus_and_gpus_only_when_wanted() -> None:
    assert CategoryResources(cpus=0.5).per_worker() == {"CPU": 0.5}
    assert CategoryResources(cpus=2, gpus=0.25).per_worker() == {"CPU": 2.0, "GPU": 0.25}


def test_a_request_larger_than_the_cluster_is_refused_before_ray_waits_forever() -> None:
    check_fits(CategoryResources(workers=2, cpus=1.0), {"CPU": 2.0})
    with pytest.raises(ConfigError) as info:
        check_fits(CategoryResources(workers=2, cpus=1.5), {"CPU": 2.0})
    assert "asks for 3 CPUs" in str(info.value) and "has 2" in str(info.value) and "--" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        check_fits(CategoryResources(gpus=1), {"CPU": 8.0})
    assert "asks for 1 GPUs" in str(info.value) and "gpus per worker to 0" in str(info.value)
    assert "--" not in str(info.value)


def test_gpus_per_worker_default_to_one_where_the_cluster_has_gpus() -> None:
    """train, cluster status and tune ask alike: the plan's GPUs, else 1 on a cluster with GPUs, else 0."""
    from adkd.platform.runs import RayPlan

    plan = RayPlan(workers_per_run=2, cpus_per_worker=2)
    assert resources_for(plan, {"CPU": 8, "GPU": 2}) == CategoryResources(workers=2, cpus=2, gpus=1.0)
    assert resources_for(plan, {"CPU": 8}).gpus == 0.0
    assert resources_for(RayPlan(gpus_per_worker=0.25), {"CPU": 8, "GPU": 2}).gpus == 0.25
    with pytest.raises(ConfigError, match="cpus per worker must be > 0"):
        resources_for(RayPlan(cpus_per_worker=0), {"CPU": 8})


def test_several_workers_sharing_a_gpu_fraction_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        check_distributed(CategoryResources(workers=2, cpus=0.5, gpus=0.5), None)
    assert "NCCL" in str(info.value) and "--" not in str(info.value)


def test_negative_max_failures_are_refused() -> None:
    assert RayRunOptions(max_failures=0).max_failures == 0
    with pytest.raises(ConfigError, match=r"max failures \(restarts of a crashed category\) must be >= 0, got -1"):
        RayRunOptions(max_failures=-1)


FORMER_NAMES = {
    "--workers-per-category": "--workers-per-run",
    "--cpus-per-category": "--cpus-per-worker",
    "--gpus-per-category": "--gpus-per-worker",
    "--cpus-per-run": "--cpus-per-worker",
    "--gpus-per-run": "--gpus-per-worker",
    "--cpus-per-trial": "--cpus-per-worker",
    "--gpus-per-trial": "--gpus-per-worker",
}


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (["train"], ("--workers-per-run", "--cpus-per-worker", "--gpus-per-worker")),
        (["benchmark"], ("--workers-per-run", "--cpus-per-worker", "--gpus-per-worker")),
        (["cluster", "status"], ("--workers-per-run", "--cpus-per-worker", "--gpus-per-worker")),
        (["tune"], ("--cpus-per-worker", "--gpus-per-worker")),  # a trial is one run on one worker
    ],
)
def test_every_ray_command_names_its_resources_alike(command: list[str], flags: tuple[str, ...]) -> None:
    from typer.testing import CliRunner

    from adkd.cli.main import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for flag in flags:
        assert flag in result.output
    shown = [former for former in FORMER_NAMES if former in result.output]
    assert not shown, f"former names shown in `adkd {' '.join(command)} --help`: {shown}"


def test_a_former_name_still_sets_the_value_and_says_the_new_one(capsys: pytest.CaptureFixture[str]) -> None:
    from adkd.cli.resource_flags import pick, ray_plan

    assert pick(None, "--cpus-per-worker", {"--cpus-per-trial": 0.5}) == 0.5
    assert "--cpus-per-trial is now --cpus-per-worker" in capsys.readouterr().err
    assert pick(2.0, "--cpus-per-worker", {"--cpus-per-run": None}) == 2.0
    assert pick(None, "--gpus-per-worker", {"--gpus-per-run": None}) is None
    with pytest.raises(ConfigError, match="--cpus-per-worker and --cpus-per-run name one setting"):
        pick(1.0, "--cpus-per-worker", {"--cpus-per-run": 1.0})
    plan = ray_plan(cpus_per_worker=0.5)
    assert (plan.workers_per_run, plan.cpus_per_worker, plan.gpus_per_worker, plan.max_failures) == (1, 0.5, None, 2)
