"""infra/: every manifest parses, runs commands and flags adkd really has, and uses the code's env variables."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from adkd.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
# Variables read by boto3/botocore or by the images themselves, not by adkd's code.
EXTERNAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"}
ADKD_SERVICES = {"mlflow", "ray-head", "ray-gpu-worker"}


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def _rest(ctx: Any) -> list[str]:
    """The arguments left for a sub-command (click 8.2 renamed protected_args)."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = getattr(ctx, "protected_args", [])
    return list(protected) + list(ctx.args)


def _parses(argv: list[str]) -> None:
    """Resolve an `adkd ...` command line through the real Typer app without running it."""
    assert argv[0] == "adkd", argv
    group = typer.main.get_command(app)
    ctx = group.make_context("adkd", argv[1:], resilient_parsing=False)
    args = _rest(ctx)
    cmd = group
    while hasattr(cmd, "get_command") and args:  # a group (typer vendors its own click classes)
        name, *args = args
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"adkd has no command {name!r} ({' '.join(argv)})"
        ctx = sub.make_context(name, args, parent=ctx, resilient_parsing=False)
        args = _rest(ctx)
        cmd = sub


def _code_env_vars() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "adkd").rglob("*.py"):
        names |= set(re.findall(r"\b((?:MLFLOW|RAY|AWS|ADKD)_[A-Z0-9_]+)\b", path.read_text()))
    return names


def test_compose_parses_and_wires_the_stack() -> None:
    compose = _load("compose.yaml")
    services = compose["services"]
    assert {"postgres", "minio", "createbucket", "mlflow", "ray-head", "ray-gpu-worker"} <= set(services)
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow_cmd
    assert "--artifacts-destination=s3://" in mlflow_cmd
    assert "mb --ignore-existing local/adkd-artifacts" in services["createbucket"]["entrypoint"]
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name in ("mlflow", "ray-head", "ray-gpu-worker"):
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile"


def test_manifest_env_vars_are_the_ones_the_code_reads() -> None:
    known = _code_env_vars() | EXTERNAL_VARS
    compose = _load("compose.yaml")
    used: set[str] = set()
    for name in ADKD_SERVICES:
        used |= set((compose["services"][name].get("environment") or {}).keys())
    job = _load("kuberay/rayjob.yaml")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    used |= {e["name"] for e in head["env"]} | {e["name"] for e in workers["env"]}
    assert used, "no environment found in the manifests"
    assert used <= known, f"variables no adkd code reads: {sorted(used - known)}"
    assert {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"} <= used


def test_rayjob_runs_a_real_adkd_command() -> None:
    job = _load("kuberay/rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["adkd", "train", "--all-categories"]
    _parses(argv)
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_ray_cluster_launcher_installs_adkd_on_gpu_workers() -> None:
    cfg = _load("ray-cluster.yaml")
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("pip install" in c and "adkd" in c for c in cfg["setup_commands"])
    assert cfg["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def test_dockerfile_installs_the_package_and_runs_adkd() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"pip install .*\"\.\[postgres\]\"", text)
    assert 'ENTRYPOINT ["adkd"]' in text
    assert "postgres" in (ROOT / "pyproject.toml").read_text()


def test_the_parser_check_can_fail() -> None:
    with pytest.raises(Exception, match="bogus"):
        _parses(["adkd", "train", "--bogus"])
    with pytest.raises(AssertionError, match="no command"):
        _parses(["adkd", "nosuch"])


@pytest.mark.parametrize(
    "line",
    [
        "adkd submit -- train --all-categories --data s3://adkd-data/mvtec --model mrkd --preset paper",
        "adkd registry promote --all --best --to production",
        "adkd server start --backend-store-uri postgresql://mlflow@db/mlflow --artifacts-destination s3://adkd-artifacts",
        "adkd predict demo-data/disc/test --model models:/adkd-disc@production --out predictions",
        "adkd tune --category disc --data demo-data --model mrkd --num-samples 2 --epochs 2",
    ],
)
def test_readme_commands_parse(line: str) -> None:
    readme = " ".join((ROOT / "README.md").read_text().replace("`", " ").split())
    assert line in readme
    _parses(shlex.split(line))
