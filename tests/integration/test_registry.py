# ruff: noqa: F811  (pytest fixtures imported by name and used as arguments)
"""Registry against a real `mlflow server`: promote, gate refusal, --force, rollback, --all --best, a race."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adkd.platform.registry.versions import (
    PromotionRefused,
    audit_trail,
    client_for,
    ensure_registered_model,
    promote,
    rollback,
)
from tests.cli_process import run_adkd
from tests.integration.mlflow_fixtures import mlflow_server  # noqa: F401

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


DATA = "f" * 64  # the fingerprint of the one data version every test version here was evaluated on


def add_version(client: MlflowClient, category: str, image_auroc: float, aupro: float) -> str:
    """A finished run with test metrics and a registered version of adkd-<category> pointing at it, evaluated on
    the data ``DATA`` (the same for all, so promotion compares their stored numbers)."""
    exp = client.get_experiment_by_name("registry-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("registry-tests")
    run = client.create_run(exp_id, tags={"category": category})
    client.log_metric(run.info.run_id, "test/image_auroc", image_auroc)
    client.log_metric(run.info.run_id, "test/aupro", aupro)
    client.set_terminated(run.info.run_id)
    name = f"adkd-{category}"
    ensure_registered_model(client, name, category)
    tags = {"category": category, "model": "rd", "metric.image_auroc": repr(image_auroc), "metric.aupro": repr(aupro),
            "data_fingerprint": DATA}  # fmt: skip
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
    return str(mv.version)


def holder(client: MlflowClient, category: str, alias: str = "production") -> str | None:
    aliases = client.get_registered_model(f"adkd-{category}").aliases
    return str(aliases[alias]) if alias in aliases else None


def adkd(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "ADKD_USER": "tester", "PYTHONPATH": str(REPO)}
    return run_adkd(args, env=env, timeout=600)


def test_promote_gate_force_rollback_and_audit(mlflow_server: str) -> None:
    client = client_for(mlflow_server)
    v1 = add_version(client, "alpha", 0.90, 0.80)
    v2 = add_version(client, "alpha", 0.85, 0.95)
    v3 = add_version(client, "alpha", 0.90, 0.85)  # ties v1 on AUROC, better AUPRO
    v4 = add_version(client, "alpha", 0.90, 0.70)  # ties v1 on AUROC, worse AUPRO

    ok = adkd(mlflow_server, "registry", "promote", "alpha", "--version", v1, "--to", "production", "--reason", "first")
    assert ok.returncode == 0, ok.stderr
    assert holder(client, "alpha") == v1

    refused = adkd(mlflow_server, "registry", "promote", "alpha", "--version", v2, "--to", "production")
    assert refused.returncode == 2
    assert "version 2 (image_auroc=0.8500" in refused.stderr and "version 1 (image_auroc=0.9000" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert holder(client, "alpha") == v1

    with pytest.raises(PromotionRefused, match="aupro"):
        promote(client, "alpha", v4, "production")
    assert promote(client, "alpha", v3, "production").previous == v1
    assert holder(client, "alpha") == v3

    forced = adkd(
        mlflow_server,
        "registry",
        "promote",
        "alpha",
        "--version",
        v2,
        "--to",
        "production",
        "--force",
        "--reason",
        "hotfix",
    )
    assert forced.returncode == 0, forced.stderr
    assert holder(client, "alpha") == v2

    back = adkd(mlflow_server, "registry", "rollback", "alpha", "--reason", "regression")
    assert back.returncode == 0, back.stderr
    assert holder(client, "alpha") == v3
    assert rollback(client, "alpha").version == v1
    assert holder(client, "alpha") == v1
    nothing = adkd(mlflow_server, "registry", "rollback", "alpha")
    assert nothing.returncode == 2 and "no earlier holder" in nothing.stderr

    # Staging is not gated.
    assert promote(client, "alpha", v2, "staging").version == v2
    assert holder(client, "alpha", "staging") == v2 and holder(client, "alpha") == v1

    trail = audit_trail(client, "alpha")
    assert [(r["action"], r["alias"], r["version"], r["previous"]) for r in trail] == [
        ("promote", "production", v1, None),
        ("refused", "production", v2, v1),
        ("refused", "production", v4, v1),
        ("promote", "production", v3, v1),
        ("promote", "production", v2, v3),
        ("rollback", "production", v3, v2),
        ("rollback", "production", v1, v3),
        ("promote", "staging", v2, None),
    ]
    forced_record = trail[4]
    assert forced_record["forced"] is True and forced_record["reason"] == "hotfix" and forced_record["user"] == "tester"
    assert trail[0]["reason"] == "first" and trail[5]["reason"] == "regression"
    version_tags = client.get_model_version("adkd-alpha", v2).tags
    assert any(k.startswith("audit.production.") for k in version_tags)
    assert "adkd.lock" not in client.get_registered_model("adkd-alpha").tags


def test_promote_all_best(mlflow_server: str) -> None:
    client = client_for(mlflow_server)
    add_version(client, "beta", 0.80, 0.5)
    best_beta = add_version(client, "beta", 0.95, 0.5)
    best_gamma = add_version(client, "gamma", 0.90, 0.5)
    add_version(client, "gamma", 0.70, 0.9)
    proc = adkd(mlflow_server, "registry", "promote", "--all", "--best", "--to", "production")
    assert proc.returncode == 0, proc.stderr
    assert holder(client, "beta") == best_beta and holder(client, "gamma") == best_gamma
    listed = adkd(mlflow_server, "registry", "list", "--json", "--category", "beta")
    assert '"production"' in listed.stdout


RACER = textwrap.dedent(
    """
    import sys
    from adkd.platform.registry.versions import client_for, promote, PromotionRefused
    uri, version = sys.argv[1], sys.argv[2]
    client = client_for(uri)
    client.get_registered_model("adkd-delta")  # connected and every import done
    print("ready", flush=True)
    sys.stdin.readline()  # both racers go at once
    try:
        print(promote(client, "delta", version, "production", reason="race").action)
    except PromotionRefused:
        print("refused")
    """
)


def test_two_processes_racing_end_consistent(mlflow_server: str) -> None:
    client = client_for(mlflow_server)
    v1 = add_version(client, "delta", 0.90, 0.5)
    promote(client, "delta", v1, "production")
    v2 = add_version(client, "delta", 0.95, 0.5)
    v3 = add_version(client, "delta", 0.97, 0.5)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, mlflow_server, v],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for v in (v2, v3)
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outcomes = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outcomes
    # Whatever the order, v3 (the better one) ends in production, and nothing was lost.
    assert holder(client, "delta") == v3
    race = [r for r in audit_trail(client, "delta") if r.get("reason") == "race"]
    assert sorted(r["version"] for r in race) == sorted([v2, v3])
    promoted = [r for r in race if r["action"] == "promote"]
    # Serialised: each promotion saw the holder the previous one left.
    previous = v1
    for record in promoted:
        assert record["previous"] == previous
        previous = record["version"]
    assert previous == v3
    if outcomes[0] == "refused":
        assert [r["action"] for r in race if r["version"] == v2] == ["refused"]
    model_tags = client.get_registered_model("adkd-delta").tags
    assert "adkd.lock" not in model_tags
    assert model_tags["production.history"].endswith(f'"{v3}"]')
