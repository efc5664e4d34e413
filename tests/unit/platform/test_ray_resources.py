"""Per-category resource requests: bad ones are refused with a message naming the setting, not a flag."""

from __future__ import annotations

import pytest

from adkd.errors import ConfigError
from adkd.platform.cluster.driver import RayRunOptions
from adkd.platform.cluster.resources import CategoryResources, check_distributed, check_fits


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"workers": 0}, "workers per category must be >= 1, got 0"),
        ({"cpus": 0}, "cpus per category must be > 0, got 0"),
        ({"gpus": -1}, "gpus per category must be >= 0, got -1"),
        ({"gpus": 1.5}, "gpus per category above 1 must be a whole number, got 1.5"),
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
    assert "asks for 1 GPUs" in str(info.value) and "gpus per category to 0" in str(info.value)
    assert "--" not in str(info.value)


def test_several_workers_sharing_a_gpu_fraction_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        check_distributed(CategoryResources(workers=2, cpus=0.5, gpus=0.5), None)
    assert "NCCL" in str(info.value) and "--" not in str(info.value)


def test_negative_max_failures_are_refused() -> None:
    assert RayRunOptions(max_failures=0).max_failures == 0
    with pytest.raises(ConfigError, match=r"max failures \(restarts of a crashed category\) must be >= 0, got -1"):
        RayRunOptions(max_failures=-1)
